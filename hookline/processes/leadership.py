"""One leader per lock name: a PostgreSQL advisory lock held on a connection of its own.

A standby polls for the lock every second and takes over once the leader's session ends (its
process died, or its connection dropped). The lock keeps a standby idle; it is not what keeps
the projections right: two leaders for a moment cannot both commit a batch, because the
checkpoint is advanced only from the value the batch was read after.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
from prometheus_client import Gauge

from hookline.config import Settings
from hookline.db.locks import lock_key
from hookline.lifecycle import Stopper

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0

LEADER = Gauge("hookline_leader", "1 while this process holds the lock and works, else 0.",
               ["lock"])


class Leadership:
    """acquire() blocks as a standby until this process leads; `leading` says it still does."""

    def __init__(self, settings: Settings, name: str, stopper: Stopper,
                 poll: float = POLL_SECONDS) -> None:
        self.settings, self.name, self.stopper, self.poll = settings, name, stopper, poll
        self.key = lock_key(name)
        self._conn: psycopg.Connection[Any] | None = None
        self._lost = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._unreachable = False
        LEADER.labels(name).set(0)

    @property
    def leading(self) -> bool:
        return self._watchdog is not None and not self._lost.is_set()

    def acquire(self) -> bool:
        """Wait for the lock: True once held, False when asked to stop first."""
        announced = False
        while not self.stopper.is_set():
            if self._try_lock():
                log.info("leading %s (advisory lock %d)", self.name, self.key)
                LEADER.labels(self.name).set(1)
                self._lost.clear()
                self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                                  name=f"lock-{self.name}")
                self._watchdog.start()
                return True
            if not announced:
                log.info("standby for %s: another process leads; polling every %.0f s",
                         self.name, self.poll)
                announced = True
            self.stopper.wait(self.poll)
        return False

    def release(self) -> None:
        """Stop leading and end the lock's session, so a standby can take over at once."""
        self._lost.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=10)
        self._watchdog = None
        self._close()
        LEADER.labels(self.name).set(0)

    def _try_lock(self) -> bool | None:
        """True: held; False: another session holds it; None: PostgreSQL unreachable."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self.settings.psycopg_url, autocommit=True,
                                             connect_timeout=5,
                                             application_name=f"hookline {self.name} lock")
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.OperationalError as exc:
            if not self._unreachable:
                log.warning("cannot reach PostgreSQL for the %s lock: %s", self.name, exc)
            self._unreachable = True
            self._close()
            return None
        self._unreachable = False
        return bool(row and row[0])

    def _watch(self) -> None:
        """While leading: check the lock's session every poll, retaking it after a reconnect."""
        while not self._lost.wait(self.poll) and not self.stopper.is_set():
            if self._session_alive():
                continue
            held = self._try_lock()
            if held:
                log.info("retook the %s lock after its connection dropped", self.name)
            elif held is False:
                log.warning("lost the %s lock to another process: stepping down", self.name)
                LEADER.labels(self.name).set(0)
                self._lost.set()
            # unreachable: no one can commit meanwhile, so keep leading and try again

    def _session_alive(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError:
            self._close()
            return False
        return True

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
