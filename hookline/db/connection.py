"""The one PostgreSQL connection a long-running process keeps, and how it survives outages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from hookline.lifecycle import Stopper

log = logging.getLogger(__name__)
T = TypeVar("T")


class Database:
    def __init__(self, url: str, stopper: Stopper, **connect_options: Any) -> None:
        self.url, self.stopper, self.options = url, stopper, connect_options
        self.conn: psycopg.Connection[Any] | None = None

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work(conn)`, reconnecting with backoff while PostgreSQL is unreachable; a stop
        request ends the waiting by raising the last OperationalError."""
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=lambda _: self.stopper.is_set(),
            before_sleep=_log_retry,
            reraise=True,
        )
        result: T = retrying(self._attempt, work)
        return result

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _attempt(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.url, **self.options)
        try:
            return work(self.conn)
        except psycopg.OperationalError:
            self.conn.close()
            raise


def _log_retry(state: RetryCallState) -> None:
    """A connection failure as libpq words it; an error from the server by its SQLSTATE and
    primary message only: its detail and context may quote the data being written."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, psycopg.Error) and exc.diag.sqlstate:
        why = f"SQLSTATE {exc.diag.sqlstate}: {exc.diag.message_primary}"
    else:
        why = str(exc).splitlines()[0] if exc and str(exc) else type(exc).__name__
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("Retrying in %.1f s: PostgreSQL unavailable (%s)", wait, why)
