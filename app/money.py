"""Amounts are integer minor units; wire text is converted exactly, never via float."""

from __future__ import annotations

import re
from decimal import Decimal

# Lua numbers are doubles: integers are exact below 2**53 only (lua/lib/ledger.lua
# checks the same limit; tests/test_constants.py holds the two together).
AMOUNT_MINOR_LIMIT = 2**53
# The most decimals an ISO 4217 currency has (CLF, UYW): 4.
EXPONENT_MAX = 4
# The limit's digits (16): a longer digit string is out of range before it is parsed.
AMOUNT_DIGITS_MAX = len(str(AMOUNT_MINOR_LIMIT))
_DIGITS = re.compile(rf"[0-9]{{1,{AMOUNT_DIGITS_MAX}}}")
# An admin's decimal amount: no more decimals than any currency has.
_DECIMAL = re.compile(rf"[0-9]{{1,{AMOUNT_DIGITS_MAX}}}(\.[0-9]{{1,{EXPONENT_MAX}}})?")


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
    assert 0 <= exponent <= EXPONENT_MAX
    if not _DECIMAL.fullmatch(text):
        raise AmountError(f"{field} must be a non-negative decimal like 100.00")
    # The regex admits only plain decimals.
    return scaled_minor(Decimal(text), exponent, f"{field} has more than {exponent} decimals", field)


def scaled_minor(value: Decimal, exponent: int, too_precise: str, field: str) -> int:
    """value in minor units of a currency with this exponent, exactly and in range."""
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise AmountError(too_precise)
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


# The Operator Integration API's DECIMAL(18,2): 16 integer digits; trailing
# zeros after the 2nd decimal are tolerated (17.250 == 17.25), bounded so the
# Decimal arithmetic below stays exact (28 significant digits).
_WIRE_DECIMAL = re.compile(r"[0-9]{1,16}(\.[0-9]{1,10})?")
# The usual shape ("17", "17.2", "17.25") in a 2-decimal currency, scaled in
# integers without Decimal; anything else takes the general path below.
_WIRE_CENTS = re.compile(r"([0-9]{1,16})(?:\.([0-9]{1,2}))?")
# The protocol's DECIMAL(18,2): 2 decimals on the wire.
WIRE_DECIMALS = 2


def wire_to_minor(text: str, exponent: int, field: str) -> int:
    """A DECIMAL(18,2) from the wire in the currency's minor units, exactly."""
    assert 0 <= exponent <= EXPONENT_MAX
    cents = _WIRE_CENTS.fullmatch(text) if exponent == WIRE_DECIMALS else None
    if cents is not None:
        minor = int(cents[1]) * 100 + int((cents[2] or "0").ljust(2, "0"))
        if minor < AMOUNT_MINOR_LIMIT:
            return minor
    if text.startswith("-"):
        raise AmountError(f"{field} must not be negative")
    if not _WIRE_DECIMAL.fullmatch(text):
        raise AmountError(f"{field} must be a decimal number like 17.25")
    value = Decimal(text)
    if value.scaleb(WIRE_DECIMALS) != value.scaleb(WIRE_DECIMALS).to_integral_value():
        raise AmountError(f"{field} has more than {WIRE_DECIMALS} decimals")
    return scaled_minor(value, exponent, f"{field} has more decimals than the currency's {exponent}", field)


def minor_to_wire(minor: int, exponent: int) -> str:
    """Minor units as a DECIMAL(18,2) text; a currency with more than 2 decimals
    is rounded down, so a balance is never shown higher than it is."""
    assert isinstance(minor, int)
    if exponent > WIRE_DECIMALS:
        return minor_to_decimal(minor // 10 ** (exponent - WIRE_DECIMALS), WIRE_DECIMALS)
    return minor_to_decimal(minor * 10 ** (WIRE_DECIMALS - exponent), WIRE_DECIMALS)
