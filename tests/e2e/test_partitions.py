"""A log in partitions: each record goes to the partition of its subject, every partition is
projected by one leader, and the projections are the same as with one stream."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest

from hookline.config import partition_of
from tests.e2e.test_bookings import SECRET, booking, post_booking, post_payment
from tests.processes import (
    Pipeline,
    Process,
    eventually,
    free_port,
    running_pipeline,
    scalar,
)

PARTITIONS = 2


@pytest.fixture
def partitioned_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "HOOKLINE_PARTITIONS": str(PARTITIONS), "HOOKLINE_BOOKINGS_SECRETS": SECRET}


@pytest.fixture
def ingest_only(partitioned_env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    with running_pipeline(partitioned_env, tmp_path, parts=("ingest",)) as pipeline:
        yield pipeline


def send(pipeline: Pipeline, first: int, count: int) -> None:
    """Bookings paid by a payment that names them (sent twice), and payments naming none."""
    for n in range(first, first + count):
        post_booking(pipeline, booking(f"BK-{n}", f"guest{n}@example.com", f"Guest {n}"))
        post_payment(pipeline, f"tx-{n}", f"BK-{n}", "succeeded", times=2)
        post_payment(pipeline, f"loose-{n}", None, "succeeded")


def projected(db: psycopg.Connection, bookings: int) -> None:
    assert scalar(db, "SELECT count(*) FROM bookings WHERE status = 'confirmed'") == bookings
    assert scalar(db, "SELECT count(*) FROM events") == 4 * bookings


def test_records_go_to_their_subjects_partition_and_are_projected_once(
        ingest_only: Pipeline, db: psycopg.Connection) -> None:
    ingest_only.start_projector()  # every partition, one thread each
    send(ingest_only, 0, 20)
    eventually(lambda: projected(db, 20), timeout=60)

    rows = db.execute("SELECT partition, subject FROM events").fetchall()
    assert {partition for partition, _ in rows} == set(range(PARTITIONS))
    assert all(partition == partition_of(subject, PARTITIONS) for partition, subject in rows)
    checkpoints: dict[str, int] = dict(
        db.execute("SELECT consumer, last_offset FROM consumer_offsets").fetchall())
    per_partition: dict[str, int] = dict(db.execute(
        "SELECT 'projector.' || partition, max(\"offset\") FROM events GROUP BY partition"
    ).fetchall())
    assert checkpoints == per_partition
    assert scalar(db, "SELECT count(*) FROM events WHERE outcome = 'duplicate'") == 20
    assert scalar(db, "SELECT count(*) FROM transactions") == 40
    assert scalar(db, "SELECT count(*) FROM email_outbox") == 40  # booking and payment, once
    assert scalar(db, "SELECT count(DISTINCT (booking_reference, template)) "
                      "FROM email_outbox") == 40


def test_a_process_per_partition_and_a_standby_that_takes_over_a_dead_one(
        ingest_only: Pipeline, db: psycopg.Connection) -> None:
    leaders = [start_projector(ingest_only, f"partition-{k}", "--partition", str(k))
               for k in range(PARTITIONS)]
    for k, leader in enumerate(leaders):
        eventually(partial(_says, leader, f"leading projector.{k}"), timeout=30)
    start_projector(ingest_only, "standby")  # stands by for every partition
    send(ingest_only, 0, 10)
    eventually(lambda: projected(db, 10), timeout=60)
    assert "leading" not in ingest_only.processes["standby"].output()

    leaders[0].kill()
    send(ingest_only, 10, 10)
    eventually(lambda: projected(db, 20), timeout=60)
    standby = ingest_only.processes["standby"].output()
    assert "leading projector.0" in standby
    assert "leading projector.1" not in standby
    assert scalar(db, "SELECT count(*) FROM email_outbox") == 40


def start_projector(pipeline: Pipeline, name: str, *args: str) -> Process:
    return pipeline.start(name, "project", *args,
                          env={"HOOKLINE_PROJECTOR_METRICS_BIND": f"127.0.0.1:{free_port()}"})


def _says(process: Process, line: str) -> None:
    assert line in process.output(), f"not yet: {line!r}"
