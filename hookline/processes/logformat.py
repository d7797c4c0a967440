"""The log line every hookline process writes: one record, one line."""

from __future__ import annotations

import logging

# C0 and C1 controls, DEL and the Unicode line breaks: each would let a value from a request
# start a forged line or drive the reader's terminal (ESC)
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROLS}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape sequence."""
    return text.translate(_ESCAPES)


class LineFormatter(logging.Formatter):
    """Escapes control characters in the whole line (message, its arguments, extra fields), so
    no call site has to remember to; a traceback, appended after, keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return escape_controls(super().formatMessage(record))
