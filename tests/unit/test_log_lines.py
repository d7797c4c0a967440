"""The log line every process writes: control characters in any value are escaped, so a
request-derived value cannot forge a second line or drive the reader's terminal."""

from __future__ import annotations

import logging
import sys

import pytest

from hookline.processes.logformat import LineFormatter, escape_controls

HOSTILE = "tx-1\r\n2026-01-01 00:00:00 INFO forged\x1b[2J\x00\u2028\u2029\x85\tend"


def record(*args: object, exc_info: bool = False) -> logging.LogRecord:
    return logging.LogRecord("hookline.test", logging.WARNING, __file__, 1, "id=%s source=%s",
                             args, sys.exc_info() if exc_info else None)


def test_a_value_with_cr_lf_esc_and_unicode_line_breaks_stays_on_one_line() -> None:
    line = LineFormatter("%(levelname)s %(message)s").format(record(HOSTILE, "stripe"))
    assert line.splitlines() == [line]
    assert line == ("WARNING id=tx-1\\r\\n2026-01-01 00:00:00 INFO forged\\x1b[2J\\x00\\u2028"
                    "\\u2029\\x85\\tend source=stripe")


def test_extra_fields_of_the_format_are_escaped_too() -> None:
    formatter = LineFormatter("%(message)s%(request)s", defaults={"request": ""})
    entry = record("a", "b")
    entry.request = " request_id=x\ny"
    assert formatter.format(entry) == "id=a source=b request_id=x\\ny"


def test_a_traceback_keeps_its_lines_after_the_escaped_message() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = record("a\nb", "c", exc_info=True)
    text = LineFormatter("%(message)s").format(entry)
    first, *rest = text.split("\n")
    assert first == "id=a\\nb source=c"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: boom"


@pytest.mark.parametrize(("raw", "shown"), [("plain text", "plain text"), ("é ü 中", "é ü 中"),
                                             ("\x7f", "\\x7f"), ("back\\slash", "back\\slash")])
def test_printable_text_is_left_alone(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown
