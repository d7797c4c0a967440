"""How the console shows values, without I/O: payloads indented with their numbers exact, and
the chart's bars in proportion."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from hookline.web.console.present import bar_chart, pretty_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(lambda d: float(d)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=12)


def test_numbers_are_written_as_stored() -> None:
    shown = pretty_json('{"amount": 10.990, "big": 12345678901234567890.123456789, "n": [1]}')
    assert shown == ('{\n  "amount": 10.990,\n  "big": 12345678901234567890.123456789,\n'
                     '  "n": [\n    1\n  ]\n}')


def test_text_that_is_not_json_is_shown_as_it_is() -> None:
    assert pretty_json("{not json") == "{not json"
    assert pretty_json(None) == ""
    assert pretty_json("[" * 100_000) == "[" * 100_000  # too deep to parse: as stored


@given(JSON)
def test_the_indented_text_is_the_same_json(value: object) -> None:
    text = json.dumps(value)
    assert json.loads(pretty_json(text)) == json.loads(text)


def test_bars_are_in_proportion_and_each_is_seen() -> None:
    chart = bar_chart([{"source": "stripe", "outcome": "applied", "count": 300},
                       {"source": "stripe", "outcome": "rejected", "count": 1}], width=560)
    longest, shortest = chart.bars
    assert longest.width == 560 - chart.label_width - 60
    assert shortest.width == 1  # a single record still shows
    assert (longest.label, shortest.outcome) == ("stripe · applied", "rejected")
    assert shortest.y > longest.y
    assert bar_chart([]).bars == ()
