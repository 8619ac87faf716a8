"""Amount parsing: exact, integer minor units, never float."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from app.money import AMOUNT_MINOR_LIMIT, AmountError, decimal_to_minor, minor_to_decimal, parse_minor


@given(st.integers(min_value=0, max_value=AMOUNT_MINOR_LIMIT - 1), st.sampled_from([0, 2, 3]))
def test_decimal_round_trip_is_exact(minor: int, exponent: int) -> None:
    assert decimal_to_minor(minor_to_decimal(minor, exponent), exponent) == minor


@given(st.decimals(min_value=0, max_value=10**13, places=2, allow_nan=False))
def test_two_decimal_amounts_convert_exactly(value: Decimal) -> None:
    assert decimal_to_minor(str(value), 2) == int(value * 100)


@pytest.mark.parametrize("text", ["", "-1", "1.5", "1e3", "+1", " 1", "0x1", "١", str(AMOUNT_MINOR_LIMIT)])  # noqa: RUF001 - an Arabic-Indic one
def test_parse_minor_refuses(text: str) -> None:
    with pytest.raises(AmountError):
        parse_minor(text, "bet")


def test_parse_minor_accepts_the_largest_exact_integer() -> None:
    assert parse_minor(str(AMOUNT_MINOR_LIMIT - 1), "bet") == AMOUNT_MINOR_LIMIT - 1


@pytest.mark.parametrize("text", ["1.001", "0.1.1", "1,00", "inf", "NaN", "-0.01"])
def test_decimal_refuses(text: str) -> None:
    with pytest.raises(AmountError):
        decimal_to_minor(text, 2)
