"""How the console shows values: payloads indented with their numbers exact, and the last
hour's deliveries as the geometry of a bar chart drawn in SVG by a template."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


def pretty_json(text: str | None) -> str:
    """The stored JSON text indented, each number written as it was stored."""
    if text is None:
        return ""
    try:
        return _dump(json.loads(text, parse_float=Decimal), 0)
    except (ValueError, RecursionError):  # shown as stored rather than not at all
        return text


def _dump(value: Any, depth: int) -> str:
    inner, outer = "  " * (depth + 1), "  " * depth
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, depth + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{outer}}}"
    if isinstance(value, list) and value:
        items = [inner + _dump(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + f"\n{outer}]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Bar:
    label: str
    outcome: str
    count: int
    x: int
    y: int
    width: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bar_height: int
    label_width: int
    bars: tuple[Bar, ...]


def bar_chart(rows: Sequence[dict[str, Any]], width: int = 640) -> Chart:
    """One horizontal bar per source and outcome, longest for the largest count."""
    bar_height, gap, label_width, room = 18, 6, 200, 60
    largest = max((int(row["count"]) for row in rows), default=0)
    span = width - label_width - room
    bars = tuple(
        Bar(f"{row['source']} · {row['outcome']}", str(row["outcome"]), int(row["count"]),
            label_width, position * (bar_height + gap),
            max(1, round(span * int(row["count"]) / largest)) if largest else 0)
        for position, row in enumerate(rows))
    height = max(bar_height, len(bars) * (bar_height + gap))
    return Chart(width, height, bar_height, label_width, bars)
