"""ISO 4217 facts (numeric code, minor-unit exponent) from the iso4217 package."""

from __future__ import annotations

from functools import lru_cache

from iso4217 import Currency


class CurrencyError(ValueError):
    pass


@lru_cache(maxsize=512)
def lookup(code: str) -> tuple[str, int]:
    """(numeric code as 3 digits, exponent) for an ISO alpha code such as 'EUR'."""
    try:
        currency = Currency(code)
    except ValueError as exc:
        raise CurrencyError(f"unknown ISO 4217 currency {code!r}") from exc
    if currency.number is None or currency.exponent is None:
        raise CurrencyError(f"currency {code!r} has no numeric code or minor unit")
    return f"{currency.number:03d}", currency.exponent


def numeric(code: str) -> str:
    return lookup(code)[0]


def exponent(code: str) -> int:
    return lookup(code)[1]
