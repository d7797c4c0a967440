"""The one JSON parser for payloads, at ingress and when projecting, with the limits of what
PostgreSQL's jsonb keeps exactly: what ingress accepts is what the projector can parse and store.

Ingress parses with orjson (fast), then refuses what jsonb or the exact re-parse could not take:
nesting deeper than MAX_DEPTH, a `\\u0000` escape, and numbers outside PostgreSQL's numeric
(more than 16383 digits after the point, a value of 10^131072 or more, an exponent beyond
±(2^30 - 1)); orjson itself refuses invalid UTF-8, lone surrogates, NaN and values beyond a
double's range. Projecting re-reads the payload with every non-integer number an exact Decimal.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

# far deeper than any provider's payload, and far below what the exact parse (Python's json
# module, one interpreter frame a level against a limit of 1000) and jsonb can take
MAX_DEPTH = 128
MAX_SCALE = 16_383  # digits after the decimal point numeric keeps
MAX_WEIGHT = 131_071  # the highest power of ten numeric keeps a digit at
MAX_EXPONENT = 2**30 - 2  # PostgreSQL refuses any exponent from INT_MAX / 2, even on zero
# The cheap scan: every digit becomes 0, E e, + -, [ {, and anything else a space; then a
# search finds exponents ("0e0", "0e-") and long digit runs, and a count bounds the nesting.
# Only what it finds is worth the exact check (also found inside strings: harmless). Plain
# substring searches or a regex over the raw body took several times longer.
_SCAN = bytes(48 if 48 <= i <= 57 else 101 if i in b"eE" else 45 if i in b"+-"
              else 123 if i in b"{[" else 32 for i in range(256))
_EXPONENT = re.compile(rb"0e[0-]")
_LONG_RUN = b"0" * (MAX_SCALE + 1)
_NUMBER = re.compile(r"-?([0-9]*)(?:\.([0-9]*))?(?:[eE]([-+]?)([0-9]+))?")
Path = tuple[str | int, ...]


class PayloadRefused(ValueError):
    """A payload that cannot be kept exactly: `message` says why (a clause without its subject,
    "is nested deeper than …"), `path` where (empty for the whole body)."""

    def __init__(self, message: str, path: Path = ()) -> None:
        super().__init__(message)
        self.message, self.path = message, path

    @property
    def field(self) -> str:
        return ".".join(map(str, self.path))


def parse(raw: bytes) -> Any:
    """The payload as orjson reads it, once sure the projector can parse and store it."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadRefused(f"is not valid JSON: {exc}") from None
    if b"\\u0000" in raw:
        raise PayloadRefused("contains a \\u0000 escape, which cannot be stored")
    scan = raw.translate(_SCAN)
    if scan.count(b"{") > MAX_DEPTH and (deep := _too_deep(payload)):
        raise PayloadRefused(f"is nested deeper than {MAX_DEPTH} levels", deep)
    if _EXPONENT.search(scan) or _LONG_RUN in scan:
        _check_numbers(raw)
    return payload


def parse_exact(raw: bytes) -> Any:
    """A payload ingress accepted, every non-integer number an exact Decimal, never a float;
    PayloadRefused (a ValueError) for one ingress would have refused, never RecursionError."""
    try:
        return _EXACT.decode(raw.decode())
    except RecursionError:
        raise PayloadRefused(f"is nested deeper than {MAX_DEPTH} levels") from None


# one decoder for every record: json.loads(parse_float=…) builds a new one on each call
_EXACT = json.JSONDecoder(parse_float=Decimal)


def number_refusal(literal: str) -> str | None:
    """Why PostgreSQL's numeric cannot keep this JSON number exactly, or None when it can."""
    found = _NUMBER.fullmatch(literal)
    if found is None:
        return "not a number"
    whole, fraction, sign, exponent_digits = found.groups(default="")
    exponent_digits = exponent_digits.lstrip("0") or "0"
    if len(exponent_digits) > 10:
        return "its exponent is out of range"
    exponent = int(exponent_digits) * (-1 if sign == "-" else 1)
    if abs(exponent) > MAX_EXPONENT:
        return "its exponent is out of range"
    if len(fraction) - exponent > MAX_SCALE:
        return f"more than {MAX_SCALE} digits after the decimal point"
    digits = (whole + fraction).lstrip("0")
    if digits and len(digits) - len(fraction) - 1 + exponent > MAX_WEIGHT:
        return f"not below 10^{MAX_WEIGHT + 1}"
    return None


class _Unstorable:
    """Stands for a number the exact check refused, to be found with its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _checked_number(literal: str) -> Any:
    reason = number_refusal(literal)
    return literal if reason is None else _Unstorable(reason)


# integers need no check: orjson refuses any beyond a double's range (309 digits)
_CHECKING = json.JSONDecoder(parse_float=_checked_number)


def _check_numbers(raw: bytes) -> None:
    """Refuse the first number numeric cannot keep, naming its path."""
    for path, value in _walk(_CHECKING.decode(raw.decode())):
        if isinstance(value, _Unstorable):
            raise PayloadRefused(f"is a number PostgreSQL cannot store exactly ({value.reason})",
                                 path)


def _walk(root: Any) -> Any:
    """Every value with its path, depth first."""
    stack: list[tuple[Path, Any]] = [((), root)]
    while stack:
        path, value = stack.pop()
        yield path, value
        if isinstance(value, dict):
            stack.extend(((*path, key), child) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, index), child) for index, child in enumerate(value))


def _too_deep(root: Any) -> Path | None:
    """The path of the first container nested deeper than MAX_DEPTH, if any."""
    stack: list[tuple[Path, Any]] = [((), root)]
    while stack:
        path, value = stack.pop()
        if len(path) >= MAX_DEPTH:
            return path
        children = value.items() if isinstance(value, dict) else enumerate(value) \
            if isinstance(value, list) else ()
        stack.extend(((*path, key), child) for key, child in children
                     if isinstance(child, dict | list))
    return None
