"""ISO 4217 active currency codes and their minor-unit exponents."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Final

# Minor-unit exponent -> active codes. Funds, metals and units whose ISO minor unit is "N.A."
# (XAU, XDR, XSU, ...) are left out; codes still listed in 2024 (SLL, ZWL, CUC) stay in, and so
# does XCG (published 2023, replaces ANG in 2025).
_CODES_BY_EXPONENT: Final = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
        "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR "
        "FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW "
        "KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN "
        "NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD "
        "SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU "
        "UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
    ),
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

EXPONENTS: Final[Mapping[str, int]] = MappingProxyType(
    {code: exp for exp, codes in _CODES_BY_EXPONENT.items() for code in codes.split()}
)


def is_currency(code: str) -> bool:
    """True for an exact uppercase, active ISO 4217 code."""
    return code in EXPONENTS


def exponent(code: str) -> int:
    """Minor-unit exponent of an exact uppercase code; KeyError for unknown codes."""
    try:
        return EXPONENTS[code]
    except KeyError:
        raise KeyError(f"unknown currency code {code!r}") from None


def format_amount(amount: Decimal | None, currency: str | None) -> str | None:
    """A decimal string with at least the currency's minor-unit places, never fewer digits."""
    if amount is None:
        return None
    places = EXPONENTS.get((currency or "").upper(), 2)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < places:
        amount = amount.quantize(Decimal(1).scaleb(-places))
    return format(amount, "f")
