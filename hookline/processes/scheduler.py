"""`hookline schedule`: append deadline records for bookings and payments that waited too long.

Expiry is a record in the log, so a replay reproduces it. Every scheduler derives the same id
for the same deadline, so running several has the effect of one; only the one holding the
scheduler lock works, the others stand by to take over.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from prometheus_client import Counter

from hookline.config import Settings
from hookline.db import bookings, transactions
from hookline.lifecycle import Stopper
from hookline.log.envelope import utcnow
from hookline.log.publisher import LogUnavailable, Publisher
from hookline.processes.leadership import Leadership
from hookline.processes.loop import LeaderLoop
from hookline.senders.deadlines import Deadline, booking_expired, payment_timed_out

log = logging.getLogger(__name__)
LIMIT = 1000
PUBLISHERS = 16

TIMERS_FIRED = Counter("hookline_timers_fired", "Deadline records appended to the log, by kind.",
                       ["kind"])


class Scheduler(LeaderLoop):
    def __init__(self, settings: Settings, stopper: Stopper, publisher: Publisher) -> None:
        super().__init__(Leadership(settings, "scheduler", stopper), stopper)
        self.settings = settings
        self.publisher = publisher
        self.pool = ThreadPoolExecutor(PUBLISHERS, thread_name_prefix="append")
        self.conn: psycopg.Connection[Any] | None = None
        # ids appended lately: not appended again while the projector catches up
        self._fired: dict[str, float] = {}
        self._remember = max(60.0, 6.0 * settings.schedule_interval)

    def run(self) -> None:
        log.info("scheduler checking deadlines every %d s", self.settings.schedule_interval)
        with self.pool:
            super().run()
        if self.conn is not None:
            self.conn.close()
        log.info("scheduler stopped")

    def lead(self) -> None:
        while not self.should_stop():
            self._tick()
            self.stopper.wait(self.settings.schedule_interval)

    def _tick(self) -> None:
        if not self.publisher.ready:
            log.warning("the log is unreachable; deadlines wait for the next round")
            return
        try:
            deadlines = self._due()
        except psycopg.OperationalError as exc:
            log.warning("cannot read deadlines, PostgreSQL unreachable: %s", exc)
            if self.conn is not None:
                self.conn.close()
            return
        fresh = [d for d in deadlines if not self._fired_lately(d.id)]
        appended = sum(self.pool.map(self._append, fresh))
        if fresh:
            log.info("appended %d of %d deadline records", appended, len(fresh))

    def _due(self) -> list[Deadline]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.settings.psycopg_url, autocommit=True)
        now = utcnow()
        expired = bookings.expired(self.conn, LIMIT)
        timed_out = transactions.timed_out(self.conn, self.settings.payment_timeout, LIMIT)
        return ([booking_expired(reference, expires_at, now) for reference, expires_at in expired]
                + [payment_timed_out(source, tx, reference, since, now)
                   for source, tx, reference, since in timed_out])

    def _fired_lately(self, record_id: str) -> bool:
        now = time.monotonic()
        if len(self._fired) > 10 * LIMIT:
            self._fired = {k: t for k, t in self._fired.items() if now - t < self._remember}
        fired = self._fired.get(record_id)
        return fired is not None and now - fired < self._remember

    def _append(self, deadline: Deadline) -> bool:
        try:
            self.publisher.publish(self.settings.stream_for(deadline.subject), deadline.id,
                                   deadline.record, utcnow())
        except LogUnavailable as exc:
            log.warning("could not append id=%s, will retry next round: %s", deadline.id, exc)
            return False
        self._fired[deadline.id] = time.monotonic()
        TIMERS_FIRED.labels(deadline.kind).inc()
        log.info("appended id=%s", deadline.id)
        return True
