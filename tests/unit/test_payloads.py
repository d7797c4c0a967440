"""The payload parser ingress and the projector share: what ingress accepts, the projector reads."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookline.log.payloads import MAX_DEPTH, PayloadRefused, number_refusal, parse, parse_exact
from hookline.senders.base import PayloadInvalid, parse_json


def nested(depth: int) -> bytes:
    """An object whose field `x` holds arrays, `depth` levels in all."""
    return b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("number", ["0e-99999", "1e-16384", "1.0e-16383", "-0.0e-20000",
                                    "1." + "0" * 16384, "0e2000000000", "1e-1" + "0" * 20])
def test_a_number_numeric_cannot_keep_is_refused_with_its_path(number: str) -> None:
    body = ('{"data": {"object": {"metadata": {"x": NUMBER}, "items": [1, NUMBER]}}}'
            .replace("NUMBER", number).encode())
    with pytest.raises(PayloadInvalid) as refused:
        parse_json(body)
    (field,) = refused.value.errors
    assert field in ("data.object.metadata.x", "data.object.items.1")
    assert "cannot store exactly" in refused.value.errors[field][0]


@pytest.mark.parametrize("number", ["1e-16383", "0." + "0" * 16382 + "1", "0e99999999",
                                    "1e308", "-1.5e-16382", "12.50", "1E+2", "0.1e1"])
def test_a_number_within_numerics_limits_is_accepted(number: str) -> None:
    assert parse_json(f'{{"x": {number}}}'.encode()) is not None


def test_numbers_in_strings_are_never_refused() -> None:
    text = "1e-99999 " + "9" * 20000
    assert parse_json(json.dumps({"id": "evt_1e5", "note": text}).encode())["note"] == text


def test_nesting_to_the_limit_is_accepted_and_one_more_is_refused_with_its_path() -> None:
    assert parse_json(nested(MAX_DEPTH))
    with pytest.raises(PayloadInvalid) as refused:
        parse_json(nested(MAX_DEPTH + 1))
    (field,) = refused.value.errors
    assert field == "x" + ".0" * (MAX_DEPTH - 1)
    assert "nested deeper than" in refused.value.errors[field][0]


def test_wide_but_shallow_bodies_are_accepted() -> None:
    assert len(parse_json(json.dumps([{"a": [1]}] * 500).encode())) == 500


def test_the_exact_parse_reads_the_deepest_accepted_body_even_in_a_deep_thread() -> None:
    parsed: list[Any] = []

    def deep(levels: int) -> None:  # a projector thread is some frames deep already
        if levels:
            deep(levels - 1)
        else:
            parsed.append(parse_exact(nested(MAX_DEPTH)))

    thread = threading.Thread(target=deep, args=(200,))
    thread.start()
    thread.join()
    assert parsed


def test_the_exact_parse_refuses_what_is_too_deep_as_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        parse_exact(nested(5000))


@pytest.mark.parametrize(("literal", "refused"), [
    ("1e-16383", False), ("1e-16384", True), ("10e-16384", True), ("0.5e-16382", False),
    ("1e131071", False), ("1e131072", True), ("9" * 131072, False), ("9" * 131073, True),
    ("0e1073741822", False), ("0e1073741823", True), ("-0", False), ("1e-00000000016383", False),
])
def test_the_number_rule_is_numerics(literal: str, refused: bool) -> None:
    assert (number_refusal(literal) is not None) == refused


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() |
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: float(d) if abs(d) < 1e300
                                                           else 1.5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                      max_size=4),
    max_leaves=30)


@given(json_values)
def test_what_ingress_accepts_the_projector_parses_to_the_same_structure(value: Any) -> None:
    body = json.dumps(value).encode()
    try:
        accepted = parse(body)
    except PayloadRefused:
        return
    exact = parse_exact(body)
    assert _shape(exact) == _shape(accepted)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return "number"  # orjson reads an integer beyond 64 bits as a float, exactly parsed
    return value
