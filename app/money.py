"""Amounts are integer minor units; wire text is converted exactly, never via float."""

from __future__ import annotations

import re
from decimal import Decimal

# Lua numbers are doubles: integers are exact below 2**53 only.
AMOUNT_MINOR_LIMIT = 2**53
_DIGITS = re.compile(r"[0-9]{1,16}")
_DECIMAL = re.compile(r"[0-9]{1,16}(\.[0-9]{1,4})?")


class AmountError(ValueError):
    pass


def parse_minor(text: str | None, field: str) -> int:
    """A non-negative integer of minor units, given as plain digits."""
    if text is None or text == "":
        raise AmountError(f"missing {field}")
    if not _DIGITS.fullmatch(text):
        raise AmountError(f"{field} must be a non-negative integer of minor units")
    value = int(text)
    if value >= AMOUNT_MINOR_LIMIT:
        raise AmountError(f"{field} is out of range")
    return value


def decimal_to_minor(text: str, exponent: int, field: str = "amount") -> int:
    """'100.00' with exponent 2 -> 10000; refuses more decimals than the currency has."""
    assert 0 <= exponent <= 4
    if not _DECIMAL.fullmatch(text):
        raise AmountError(f"{field} must be a non-negative decimal like 100.00")
    scaled = Decimal(text).scaleb(exponent)  # the regex admits only plain decimals
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{field} has more than {exponent} decimals")
    minor = int(scaled)
    if minor >= AMOUNT_MINOR_LIMIT:
        raise AmountError(f"{field} is out of range")
    return minor


def minor_to_decimal(minor: int, exponent: int) -> str:
    assert isinstance(minor, int)
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(exponent + 1, "0")
    if exponent == 0:
        return sign + digits
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"
