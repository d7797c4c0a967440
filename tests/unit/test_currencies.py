"""ISO 4217 exponents and exact minor-unit conversion."""

from __future__ import annotations

from decimal import localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookline.domain.amounts import from_minor_units
from hookline.domain.currencies import EXPONENTS, exponent, is_currency


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("USD", 2), ("EUR", 2), ("GBP", 2), ("ETB", 2), ("CHF", 2), ("MGA", 2),
        ("JPY", 0), ("KRW", 0), ("CLP", 0), ("ISK", 0), ("VND", 0), ("XAF", 0), ("XOF", 0),
        ("UGX", 0), ("PYG", 0), ("XPF", 0),
        ("BHD", 3), ("KWD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("IQD", 3), ("LYD", 3),
        ("CLF", 4), ("UYW", 4),
    ],
)  # fmt: skip
def test_exponent_of_known_codes(code: str, expected: int) -> None:
    assert exponent(code) == expected
    assert EXPONENTS[code] == expected


def test_table_holds_only_uppercase_three_letter_codes_with_known_exponents() -> None:
    assert len(EXPONENTS) >= 150
    assert all(len(code) == 3 and code.isascii() and code.isupper() for code in EXPONENTS)
    assert set(EXPONENTS.values()) == {0, 2, 3, 4}


@pytest.mark.parametrize("code", ["XAU", "XDR", "XTS", "XXX", "HRK", "DEM"])
def test_units_without_minor_units_and_withdrawn_codes_are_not_currencies(code: str) -> None:
    assert not is_currency(code)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        EXPONENTS["ABC"] = 2  # type: ignore[index]


@pytest.mark.parametrize("code", ["USD", "ETB", "JPY", "KWD"])
def test_is_currency_accepts_exact_uppercase_codes(code: str) -> None:
    assert is_currency(code)


@pytest.mark.parametrize("code", ["usd", "Usd", " USD", "USD ", "US", "USDD", "", "ÜSD", "ABC"])
def test_is_currency_rejects_anything_else(code: str) -> None:
    assert not is_currency(code)


@pytest.mark.parametrize("code", ["usd", "ABC", "", "XAU"])
def test_exponent_of_unknown_code_raises_key_error(code: str) -> None:
    with pytest.raises(KeyError):
        exponent(code)


@given(amount=st.integers(1, 10**15 - 1), code=st.sampled_from(sorted(EXPONENTS)))
def test_conversion_round_trips_to_minor_units(amount: int, code: str) -> None:
    major = from_minor_units(amount, exponent(code), places=exponent(code))
    assert major.as_tuple().exponent == -exponent(code)
    with localcontext(prec=100):  # the check itself must not round
        assert major * (10 ** exponent(code)) == amount
