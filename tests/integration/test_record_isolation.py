"""Whatever a record holds, project_batch projects it and moves the checkpoint past it: a batch
that fails on a record is projected again record by record, the failing one `rejected`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from hookline.config import Settings
from hookline.db import rejections
from hookline.domain.events import DomainEvent, PaymentReported
from hookline.lifecycle import Stopper
from hookline.log.envelope import Envelope, encode
from hookline.log.reader import Record
from hookline.projection.batch import CheckpointMoved, project_batch
from hookline.projection.rebuild import Rebuild
from hookline.senders.registry import interpreters
from tests.e2e.test_poison_records import ok, poison, publish
from tests.processes import scalar

NOW = datetime.now(UTC).replace(microsecond=0)


def records(payloads: list[bytes], first: int = 0) -> list[Record]:
    return [Record(first + n, encode(f"transactions:{tx}", "transactions",
                                     "transaction.succeeded", tx, NOW + timedelta(seconds=n),
                                     payload))
            for n, (tx, payload) in enumerate((orjson.loads(p)["transaction_id"], p)
                                              for p in payloads)]


def with_bad_record(bad: Callable[[Envelope], list[DomainEvent]]) -> dict[str, Any]:
    """The real interpreters, but the transaction tx-2 is interpreted by `bad`."""
    real = interpreters()

    def transactions(envelope: Envelope) -> list[DomainEvent]:
        return bad(envelope) if envelope.subject == "tx-2" else real["transactions"](envelope)
    return {**real, "transactions": transactions}


def events(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute('SELECT "offset", outcome, error, payload IS NULL FROM events '
                      'ORDER BY "offset"').fetchall()


def too_long_currency(envelope: Envelope) -> list[DomainEvent]:
    # an unforeseen mapping bug: the event breaks a column's limit inside the database write
    return [PaymentReported(transaction_id="tx-2", status="succeeded", currency="EURO",
                            occurred_at=envelope.received_at)]


def unknown_status(envelope: Envelope) -> list[DomainEvent]:
    # another: a value the state rules were never given, which raises while applying it
    return [PaymentReported(transaction_id="tx-2", status="lost",  # type: ignore[arg-type]
                            occurred_at=envelope.received_at)]


@pytest.mark.parametrize(("bad", "reason"), [
    (too_long_currency, "projection failed: SQLSTATE 22001: value too long for type "
                        "character varying(3)"),
    (unknown_status, "projection failed: KeyError: 'lost'"),
])
def test_a_record_that_fails_while_projected_is_rejected_and_the_others_applied(
        db: psycopg.Connection, bad: Callable[[Envelope], list[DomainEvent]],
        reason: str) -> None:
    batch = records([ok(1), ok(2), ok(3)])

    outcomes = project_batch(db, "projector", batch, -1, with_bad_record(bad))

    assert outcomes == {"applied": 2, "rejected": 1}
    assert events(db) == [(0, "applied", None, False), (1, "rejected", reason, False),
                          (2, "applied", None, False)]
    assert scalar(db, "SELECT last_offset FROM consumer_offsets") == 2
    assert [r[0] for r in db.execute("SELECT transaction_id FROM transactions ORDER BY 1")] == [
        "tx-1", "tx-3"]


def test_a_payload_postgresql_cannot_store_is_rejected_without_it(
        db: psycopg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    batch = records([ok(1), poison(2, "1e-16384"), ok(3), ok(1)])

    outcomes = project_batch(db, "projector", batch, -1, interpreters())

    assert outcomes == {"applied": 2, "rejected": 1, "duplicate": 1}
    _, outcome, error, no_payload = events(db)[1]
    assert (outcome, no_payload) == ("rejected", True)
    assert error == ("projection failed: SQLSTATE 22003: value overflows numeric format; the "
                     "payload could not be stored (the log keeps the record)")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "SQLSTATE 22003" in logged
    assert "payload-marker" not in logged


def test_several_bad_records_in_a_large_batch_are_each_rejected_alone(
        db: psycopg.Connection) -> None:
    bad = {7, 8, 31}
    payloads = [poison(n, "0e-99999") if n in bad else ok(n) for n in range(1, 51)]

    outcomes = project_batch(db, "projector", records(payloads), -1, interpreters())

    assert outcomes == {"applied": 47, "rejected": 3}
    assert {o for o, outcome, _, _ in events(db) if outcome == "rejected"} == {6, 7, 30}
    assert scalar(db, "SELECT count(*) FROM transactions") == 47
    assert scalar(db, "SELECT last_offset FROM consumer_offsets") == 49


def test_a_batch_without_a_bad_record_is_projected_in_one_go(
        db: psycopg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert project_batch(db, "projector", records([ok(1), ok(2)]), -1, interpreters()) == {
        "applied": 2}
    assert "in parts" not in caplog.text


def test_a_checkpoint_another_projector_moved_is_not_taken_for_a_bad_record(
        db: psycopg.Connection) -> None:
    project_batch(db, "projector", records([ok(1), ok(2)]), -1, interpreters())

    with pytest.raises(CheckpointMoved):  # this one still thinks nothing was projected
        project_batch(db, "projector", records([poison(1, "0e-99999"), ok(2)]), -1,
                      interpreters())
    assert scalar(db, "SELECT count(*) FROM events") == 2


def test_a_rejection_an_operator_adds_is_obeyed_and_a_projected_offset_refused(
        db: psycopg.Connection) -> None:
    assert rejections.add(db, "projector", 0, 1, "stops the projector") is False
    assert rejections.add(db, "projector", 0, 1, "crashes the mapper") is True

    project_batch(db, "projector", records([ok(1), ok(2), ok(3)]), -1, interpreters())

    assert events(db)[1] == (1, "rejected", "rejected by an operator: crashes the mapper",
                             False)
    assert scalar(db, "SELECT count(*) FROM transactions WHERE transaction_id = 'tx-2'") == 0
    with pytest.raises(rejections.AlreadyProjected, match=r"already projected \(applied"):
        rejections.add(db, "projector", 0, 2, "too late")


def test_a_rebuild_isolates_bad_records_and_obeys_operators_as_the_projector_does(
        settings: Settings, db: psycopg.Connection) -> None:
    payloads = [ok(1), poison(2, "0e-99999"), ok(3), ok(4)]
    publish(settings, payloads)
    rejections.add(db, "projector", 0, 3, "an operator's choice")
    live = [Record(n, body) for n, body in enumerate(_log_bodies(settings, len(payloads)))]
    project_batch(db, "projector", live, -1, interpreters())
    before = events(db)

    report = Rebuild(settings, Stopper()).run()

    assert report.swapped
    assert events(db) == before
    assert [row[1] for row in before] == ["applied", "rejected", "applied", "rejected"]


def _log_bodies(settings: Settings, count: int) -> list[bytes]:
    from hookline.log.reader import StreamReader

    bodies: list[bytes] = []
    reader = StreamReader(settings, 0, 100, "isolation-test", lambda: len(bodies) >= count)
    try:
        for batch in reader.batches():
            bodies += [record.body for record in batch.records]
            reader.ack(batch)
    finally:
        reader.close()
    return bodies[:count]


def test_payloads_are_json_bytes() -> None:  # the helpers build what ingress would have sent
    assert orjson.loads(ok(1))["transaction_id"] == "tx-1"
