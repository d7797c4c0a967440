"""Two projectors, two schedulers: one of each leads, the other takes over when it is killed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_bookings import SECRET, booking, post_booking
from tests.processes import (
    UNSIGNED_TRANSACTIONS,
    Pipeline,
    Process,
    eventually,
    free_port,
    running_pipeline,
    scalar,
)

TAKEOVER_SECONDS = 5.0
MAX_POSTS = 6000  # the load stops by itself after this many, or after LOAD_SECONDS
LOAD_SECONDS = 90.0


def metric(process: Process, variable: str, name: str, **labels: str) -> float:
    text = requests.get(f"http://{process.env[variable]}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def leader_of(processes: list[Process], variable: str, lock: str) -> Process:
    """The one process that reports holding `lock`; the others must report standing by."""
    leading = [p for p in processes if metric(p, variable, "hookline_leader", lock=lock) == 1]
    assert len(leading) == 1, f"{len(leading)} processes lead {lock}"
    return leading[0]


def leader_and_standby(pipeline: Pipeline, kind: str) -> tuple[Process, Process, str]:
    """Of `kind`-1 and `kind`-2, the one that leads and the other; the variable naming the
    address of their metrics."""
    pair = [pipeline.processes[f"{kind}-{n}"] for n in (1, 2)]
    bind = f"HOOKLINE_{kind.upper()}_METRICS_BIND"
    leader = eventually(partial(leader_of, pair, bind, kind), timeout=30)
    return leader, next(p for p in pair if p is not leader), bind


class Load:
    """Posts distinct transactions through ingest from a few threads until stopped."""

    def __init__(self, pipeline: Pipeline, threads: int = 4) -> None:
        self.pipeline, self.threads = pipeline, threads
        self.accepted: list[tuple[float, str]] = []
        self.failed: list[int] = []
        self._stop = threading.Event()
        self._counter = iter(range(MAX_POSTS))
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads)

    def __enter__(self) -> Load:
        deadline = time.monotonic() + LOAD_SECONDS
        for _ in range(self.threads):
            self._pool.submit(self._post_until, deadline)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)

    def _post_until(self, deadline: float) -> None:
        with requests.Session() as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    n = next(self._counter, None)
                if n is None:
                    return
                body = {"transaction_id": f"tx-sb-{n}", "source_account": "acct-guest",
                        "destination_account": "acct-hotel", "amount": f"{n}.50",
                        "currency": "EUR"}
                try:
                    answer = http.post(f"{self.pipeline.ingest_url}/v1/webhooks/transactions",
                                       json=body, timeout=30)
                except requests.RequestException:
                    self.failed.append(0)  # unanswered: it may or may not be in the log
                    continue
                if answer.status_code == 202:
                    self.accepted.append((time.monotonic(), answer.json()["id"]))
                else:
                    self.failed.append(answer.status_code)


def checkpoint(db: psycopg.Connection) -> int:
    value = scalar(db, "SELECT last_offset FROM consumer_offsets WHERE consumer = 'projector'")
    return -1 if value is None else int(value)


@pytest.fixture
def two_projectors(env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    with running_pipeline({**env, "HOOKLINE_PROJECTOR_BATCH": "25", **UNSIGNED_TRANSACTIONS},
                          tmp_path,
                          parts=("ingest",)) as pipeline:
        for name in ("projector-1", "projector-2"):
            pipeline.start(name, "project", env={
                "HOOKLINE_PROJECTOR_METRICS_BIND": f"127.0.0.1:{free_port()}"})
        yield pipeline


def test_killing_the_leading_projector_under_load_hands_over_within_5s_exactly_once(
        two_projectors: Pipeline, db: psycopg.Connection) -> None:
    leader, standby, bind = leader_and_standby(two_projectors, "projector")

    with Load(two_projectors) as load:
        eventually(partial(past, db, 300), timeout=60)
        leader.kill()
        killed_at, left_at = time.monotonic(), checkpoint(db)
        eventually(partial(past, db, left_at + 1), timeout=TAKEOVER_SECONDS + 5, interval=0.05)
        took_over_in = time.monotonic() - killed_at
        more = len(load.accepted) + 300
        eventually(lambda: at_least(len(load.accepted), more), timeout=60)

    assert took_over_in <= TAKEOVER_SECONDS, f"took over after {took_over_in:.1f} s"
    assert metric(standby, bind, "hookline_leader", lock="projector") == 1
    assert load.failed == [], "deliveries were refused or unanswered during the handover"
    accepted = {record_id for _, record_id in load.accepted}
    assert len(accepted) == len(load.accepted) > more - 300 > 300
    eventually(partial(past, db, len(accepted) - 1), timeout=60)
    applied: dict[str, int] = dict(db.execute(
        "SELECT id, count(*) FROM events WHERE outcome = 'applied' GROUP BY id").fetchall())
    assert set(applied) == accepted, "an accepted id was not projected"
    assert set(applied.values()) == {1}, "an id was applied twice"
    assert checkpoint(db) == len(accepted) - 1  # the log holds the accepted records only
    assert scalar(db, "SELECT count(*) FROM events") == len(accepted)
    assert scalar(db, "SELECT count(*) FROM transactions") == len(accepted)
    assert standby.alive
    assert "leading projector" in standby.output()


def at_least(value: int, floor: int) -> None:
    assert value >= floor, f"{value} < {floor}"


def past(db: psycopg.Connection, offset: int) -> None:
    at_least(checkpoint(db), offset)


@pytest.fixture
def two_schedulers(env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    timers = {**env, "HOOKLINE_BOOKINGS_SECRETS": SECRET, "HOOKLINE_BOOKING_TTL": "2",
              "HOOKLINE_SCHEDULE_INTERVAL": "1"}
    with running_pipeline(timers, tmp_path, parts=("ingest", "projector")) as pipeline:
        for name in ("scheduler-1", "scheduler-2"):
            pipeline.start_scheduler(name)
        yield pipeline


def expired(db: psycopg.Connection, references: list[str]) -> None:
    count = scalar(db, "SELECT count(*) FROM bookings WHERE status = 'expired' "
                       "AND reference = ANY(%s)", references)
    assert count == len(references)


def test_only_the_leading_scheduler_appends_and_its_standby_takes_over_when_it_dies(
        two_schedulers: Pipeline, db: psycopg.Connection) -> None:
    leader, standby, bind = leader_and_standby(two_schedulers, "scheduler")

    first = [f"BK-SB-{n:02d}" for n in range(10)]
    for reference in first:
        post_booking(two_schedulers, booking(reference, f"{reference.lower()}@example.com", "G"))
    eventually(lambda: expired(db, first), timeout=40)
    assert metric(standby, bind, "hookline_timers_fired_total") == 0
    assert "appended id=" not in standby.output()
    assert metric(leader, bind, "hookline_timers_fired_total") >= len(first)

    leader.kill()
    killed_at = time.monotonic()
    eventually(lambda: at_least(int(metric(standby, bind, "hookline_leader", lock="scheduler")),
                                1), timeout=TAKEOVER_SECONDS + 5, interval=0.05)
    took_over_in = time.monotonic() - killed_at
    second = [f"BK-SB-{n:02d}" for n in range(10, 20)]
    for reference in second:
        post_booking(two_schedulers, booking(reference, f"{reference.lower()}@example.com", "G"))
    eventually(lambda: expired(db, second), timeout=40)

    assert took_over_in <= TAKEOVER_SECONDS, f"took over after {took_over_in:.1f} s"
    assert all(f"appended id=scheduler:booking.expired:{r}" in standby.output() for r in second)
    applied = db.execute("SELECT id, count(*) FROM events WHERE source = 'scheduler' AND "
                         "outcome = 'applied' GROUP BY id ORDER BY id").fetchall()
    assert applied == [(f"scheduler:booking.expired:{r}", 1) for r in first + second]
