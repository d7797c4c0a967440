"""What the long-running processes share: working only while leading (the projector, the
scheduler), and waiting out an outage instead of exiting on it (the projector, the mailer)."""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator

import psycopg

from hookline.db.connection import Database
from hookline.lifecycle import Stopper
from hookline.processes.leadership import Leadership


class LeaderLoop(ABC):
    """Works only while holding its lock (leadership.py): a standby waits until the leader is
    gone, then leads until it loses the lock or is asked to stop, and stands by again."""

    def __init__(self, leadership: Leadership, stopper: Stopper) -> None:
        self.leadership, self.stopper = leadership, stopper

    def run(self) -> None:
        try:
            while self.leadership.acquire():  # a standby waits here until the leader is gone
                self.lead()
                self.leadership.release()
        finally:
            self.leadership.release()  # ends the lock's session, so a standby takes over now

    def should_stop(self) -> bool:
        """Asked to stop, or another process leads now."""
        return self.stopper.is_set() or not self.leadership.leading

    @abstractmethod
    def lead(self) -> None:
        """Work until should_stop() is true."""


@contextlib.contextmanager
def outages(db: Database, stopper: Stopper, log: logging.Logger,
            unapplied: str = "") -> Iterator[None]:
    """Around a process's loop: `db.run` waits out a PostgreSQL outage and reconnects (the
    stream's reader does so for RabbitMQ); a stop during one ends the loop with a warning
    saying what was `unapplied`, not with a traceback. The connection is closed after."""
    try:
        yield
    except psycopg.OperationalError:
        if not stopper.is_set():
            raise
        log.warning("stopped while PostgreSQL was unreachable%s", unapplied)
    finally:
        db.close()
