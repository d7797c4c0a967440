"""Two partitions' projectors changing the same row at the same time: the second waits for the
first to commit and merges with it, never overwriting it with a state computed without it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest

from hookline.log.envelope import encode
from hookline.log.reader import Record
from hookline.projection.batch import Partition, project_batch
from hookline.senders.registry import interpreters
from tests.processes import eventually, scalar

NOW = datetime.now(UTC).replace(microsecond=0)
WAITING = "SELECT count(*) FROM pg_locks WHERE NOT granted"


def payment(tx: str, status: str, reference: str | None) -> Record:
    """A payment record; one without a booking reference has the payment as its subject, so
    its records and those naming the booking can be in different partitions."""
    payload = {"transaction_id": tx, "source_account": "acct-guest",
               "destination_account": "acct-hotel", "amount": "80.00", "currency": "EUR",
               "booking_reference": reference, "status": status}
    return Record(0, encode(f"transactions:{tx}:{status}", "transactions",
                            f"transaction.{status}", reference or tx, NOW,
                            orjson.dumps(payload)))


@pytest.fixture
def connections(database_url: str) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as first, psycopg.connect(url) as second:
        yield first, second


def project(conn: psycopg.Connection, record: Record, partition: int, shared: bool) -> Any:
    return project_batch(conn, f"projector.{partition}", [record], -1, interpreters(),
                         partition=Partition(partition, shared))


@pytest.mark.parametrize("reference_first", [True, False])
def test_a_row_changed_in_two_partitions_at_once_keeps_both_changes(
        connections: tuple[psycopg.Connection, psycopg.Connection], db: psycopg.Connection,
        reference_first: bool) -> None:
    first, second = connections
    named = payment("tx-9", "pending", "BK-9")
    unnamed = payment("tx-9", "succeeded", None)
    early, late = (named, unnamed) if reference_first else (unnamed, named)
    with first.transaction():  # partition 0's batch, written and not yet committed
        project(first, early, 0, shared=True)
        waiter = threading.Thread(target=project, args=(second, late, 1, True))
        waiter.start()
        eventually(lambda: _waiting(db))  # partition 1's batch waits for the row
    waiter.join(timeout=20)
    assert not waiter.is_alive()

    row = db.execute("SELECT status, booking_reference FROM transactions "
                     "WHERE transaction_id = 'tx-9'").fetchone()
    assert row == ("succeeded", "BK-9")
    assert scalar(db, "SELECT count(*) FROM events WHERE outcome = 'applied'") == 2
    assert scalar(db, "SELECT array_agg(partition ORDER BY partition) FROM events") == [0, 1]


def _waiting(db: psycopg.Connection) -> None:
    assert scalar(db, WAITING) >= 1, "the second batch is not waiting for the first"
