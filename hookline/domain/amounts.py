"""Amounts of money: the one parser every source uses, with one set of rules, for amounts
written in major units (`parse_amount`) or counted in minor units (`from_minor_units`).

An amount is positive, exact (a Decimal, never through a float), below 10^15 (beyond any real
payment, within what numeric stores), written in plain ASCII digits with at most `places`
decimals: no sign, spaces, underscores, exponents or other scripts' digits, which Decimal()
would otherwise take.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Final

LIMIT: Final = Decimal(10) ** 15
MAX_PLACES: Final = 4  # where a source states no currency's places (generic, bookings)
_DECIMAL_TEXT = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,16})?", re.ASCII)


class AmountInvalid(ValueError):
    """The value is not an amount; the message says which rule it breaks."""


def parse_amount(value: Any, places: int = MAX_PLACES) -> Decimal:
    """A JSON number (int or exact Decimal) or a decimal string, checked against every rule."""
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise AmountInvalid("must be a decimal number or a decimal string")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise AmountInvalid("must be plain digits with an optional decimal point")
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0:
        raise AmountInvalid("must be a positive amount")
    return checked(amount, places)


def from_minor_units(minor: int, exponent: int, places: int = MAX_PLACES) -> Decimal:
    """A whole number of minor units (`exponent` of them make a major unit) as an exact
    major-unit amount, checked against every rule."""
    sign, digits, _ = Decimal(minor).as_tuple()
    # built from the tuple, not by division, so no context precision can round it
    return checked(Decimal((sign, digits, -exponent)), places)


def checked(amount: Decimal, places: int) -> Decimal:
    """`amount` when it is positive, below the limit and has at most `places` decimals."""
    if amount <= 0:
        raise AmountInvalid("must be a positive amount")
    if amount >= LIMIT:
        raise AmountInvalid("must be below 10^15")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise AmountInvalid(f"must have at most {places} decimal places")
    return amount
