"""Signals to a clean stop: the batch in hand is finished, then the process exits 0."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


class Unreachable(Exception):
    """A service the process needs (PostgreSQL, RabbitMQ) cannot be reached; the message says
    which, by its masked URL."""

log = logging.getLogger(__name__)


class Stopper:
    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> Stopper:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping after the batch in hand", signal.Signals(signum).name)
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)
