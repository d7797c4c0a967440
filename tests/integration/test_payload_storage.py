"""What ingress accepts, PostgreSQL stores: generated payloads through the shared parser, then
into a real jsonb column, as the projector's COPY into events.payload does."""

from __future__ import annotations

import json

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.log.payloads import MAX_DEPTH, PayloadRefused, number_refusal, parse, parse_exact

EDGES = [0, 1, 308, 309, 16382, 16383, 16384, 16385, 20000, 99999, 131071, 131072, 131073,
         2**30 - 2, 2**30 - 1, 2**31]


@st.composite
def numbers(draw: st.DrawFn) -> str:
    """JSON number literals, many near numeric's limits."""
    whole = draw(st.sampled_from(["0", "1", "9", "12345678901234567890"]) |
                 st.integers(0, 10**30).map(str))
    fraction = draw(st.none() | st.text("0123456789", min_size=1, max_size=30) |
                    st.sampled_from([16382, 16383, 16384]).map(lambda n: "0" * (n - 1) + "1"))
    exponent = draw(st.none() | st.integers(-20, 20) |
                    st.sampled_from(EDGES).flatmap(lambda e: st.sampled_from([e, -e])))
    literal = draw(st.sampled_from(["", "-"])) + whole
    literal += "" if fraction is None else "." + fraction
    if exponent is not None:
        literal += draw(st.sampled_from(["e", "E"])) + (
            draw(st.sampled_from(["", "+"])) + str(exponent) if exponent >= 0 else str(exponent))
    return literal


scalars = (numbers() | st.text(max_size=20).map(json.dumps) |
           st.sampled_from(["true", "false", "null", '"\\ud83d\\ude00"', '"\\u00e9"']))


def nest(levels: int, inner: str) -> str:
    return '{"a": ' * levels + inner + "}" * levels


documents = st.one_of(
    st.lists(scalars, max_size=6).map(lambda items: "[" + ", ".join(items) + "]"),
    st.dictionaries(st.text(max_size=8), scalars, max_size=6).map(
        lambda d: "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in d.items()) + "}"),
    st.tuples(st.integers(1, MAX_DEPTH + 3), scalars).map(lambda t: nest(*t)),
)


@pytest.fixture
def jsonb(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("CREATE TABLE stored (payload jsonb)")
    return db


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(documents)
def test_what_ingress_accepts_the_projector_parses_and_postgresql_stores(
        jsonb: psycopg.Connection, document: str) -> None:
    raw = document.encode()
    try:
        parse(raw)
    except PayloadRefused:
        return
    parse_exact(raw)
    jsonb.execute("INSERT INTO stored (payload) VALUES (%s::jsonb)", (document,))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(numbers())
def test_the_number_rule_refuses_exactly_what_numeric_refuses(
        jsonb: psycopg.Connection, literal: str) -> None:
    try:
        with jsonb.transaction():
            jsonb.execute("SELECT %s::jsonb", (literal,))
        stored = True
    except psycopg.errors.NumericValueOutOfRange:
        stored = False
    assert (number_refusal(literal) is None) == stored
