"""Projecting bookings joined with payments into PostgreSQL, with their outbox rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest

from hookline.log.envelope import encode
from hookline.log.reader import Record
from hookline.mail.outbox import render
from hookline.projection.batch import project_batch
from hookline.senders import deadlines
from hookline.senders.registry import interpreters
from tests.processes import scalar

NOW = datetime.now(UTC).replace(microsecond=0)
TABLES = "events, transactions, bookings, consumer_offsets"


def created(reference: str, email: str, total: str = "300.00") -> tuple[str, str, str, bytes]:
    booking = {"reference": reference, "customer": {"email": email, "name": f"Guest {reference}"},
               "destination": "Gondar", "travel_date": "2026-09-01", "travelers": 1,
               "total_amount": total, "currency": "EUR", "created_at": NOW}
    return (f"bookings:created-{reference}", "bookings", "booking.created",
            orjson.dumps({"type": "booking.created", "booking": booking}))


def paid(tx: str, reference: str, status: str = "succeeded",
         amount: str = "300.00") -> tuple[str, str, str, bytes]:
    return (f"transactions:{tx}:{status}", "transactions", f"transaction.{status}",
            orjson.dumps({"transaction_id": tx, "source_account": "acct-guest",
                          "destination_account": "acct-hotel", "amount": amount,
                          "currency": "EUR", "booking_reference": reference, "status": status,
                          "failure_reason": "card declined" if status == "failed" else None}))


def expired(reference: str) -> tuple[str, str, str, bytes]:
    record = deadlines.booking_expired(reference, NOW, NOW)
    return (record.id, "scheduler", "booking.expired", orjson.dumps({"reference": reference}))


SCENARIO = [
    created("BK-1", "one@example.com"), paid("tx-1", "BK-1"),
    paid("tx-3", "BK-3"), created("BK-3", "three@example.com"),
    created("BK-2", "two@example.com"), paid("tx-2", "BK-2", "failed"),
    created("BK-4", "four@example.com"), expired("BK-4"), expired("BK-4"),  # two schedulers
    paid("tx-4", "BK-4"),
    created("BK-5", "five@example.com"), paid("tx-5", "BK-5", amount="100.00"),
    created("BK-1", "one@example.com"),  # a repeat: a duplicate, never a second email
]


def records(entries: list[tuple[str, str, str, bytes]], first: int = 0) -> list[Record]:
    return [Record(first + n, encode(record_id, source, kind, "subject",
                                     NOW + timedelta(seconds=n), payload))
            for n, (record_id, source, kind, payload) in enumerate(entries)]


def project(conn: psycopg.Connection, batches: list[list[Record]]) -> None:
    expected = -1
    for batch in batches:
        project_batch(conn, "projector", batch, expected, interpreters(), booking_ttl=60)
        expected = batch[-1].offset


def snapshot(conn: psycopg.Connection) -> tuple[Any, Any]:
    bookings = conn.execute(
        "SELECT reference, status, late_payment, amount_mismatch, confirmed_at IS NOT NULL, "
        "customer_email, total_amount, expires_at FROM bookings ORDER BY reference").fetchall()
    emails = conn.execute(
        "SELECT booking_reference, template, recipient, context FROM email_outbox "
        "ORDER BY booking_reference, template").fetchall()
    return bookings, emails


@pytest.mark.parametrize("size", [1, 3, len(SCENARIO)])
def test_bookings_and_emails_do_not_depend_on_how_the_log_is_batched(
        db: psycopg.Connection, size: int) -> None:
    log = records(SCENARIO)
    project(db, [log[i:i + size] for i in range(0, len(log), size)])
    bookings, emails = snapshot(db)

    assert [row[:5] for row in bookings] == [
        ("BK-1", "confirmed", False, False, True),
        ("BK-2", "pending", False, False, False),
        ("BK-3", "confirmed", False, False, True),
        ("BK-4", "expired", True, False, False),
        ("BK-5", "pending", False, True, False),
    ]
    assert bookings[0][6] == Decimal("300.00")
    assert bookings[0][7] == NOW + timedelta(seconds=60)
    assert [(ref, template, to) for ref, template, to, _ in emails] == [
        ("BK-1", "booking_confirmation", "one@example.com"),
        ("BK-1", "payment_confirmation", "one@example.com"),
        ("BK-2", "booking_confirmation", "two@example.com"),
        ("BK-2", "payment_failure", "two@example.com"),
        ("BK-3", "booking_confirmation", "three@example.com"),
        ("BK-3", "payment_confirmation", "three@example.com"),
        ("BK-4", "booking_confirmation", "four@example.com"),
        ("BK-5", "booking_confirmation", "five@example.com"),
    ]
    assert scalar(db, "SELECT count(*) FROM events WHERE outcome = 'duplicate'") == 2


def test_an_email_body_carries_the_customer_and_the_booking(db: psycopg.Connection) -> None:
    project(db, [records(SCENARIO[:2])])
    template, context = db.execute(
        "SELECT template, context FROM email_outbox "
        "WHERE template = 'payment_confirmation'").fetchone() or ("", {})
    rendered = render(template, context)
    assert "BK-1" in rendered.subject
    for part in (rendered.text, rendered.html):
        assert "Guest BK-1" in part
        assert "Gondar" in part
        assert "300.00 EUR" in part


def test_a_replay_into_fresh_projections_enqueues_no_email_twice(db: psycopg.Connection) -> None:
    log = records(SCENARIO)
    project(db, [log])
    before = db.execute("SELECT id, event_id, template FROM email_outbox ORDER BY id").fetchall()

    db.execute(f"TRUNCATE {TABLES}")
    project(db, [log[:5], log[5:]])

    after = db.execute("SELECT id, event_id, template FROM email_outbox ORDER BY id").fetchall()
    assert after == before
    assert snapshot(db)[0][0][1] == "confirmed"


def test_payments_for_bookings_not_yet_created_write_no_booking_rows(
        db: psycopg.Connection) -> None:
    project(db, [records([paid(f"tx-{n}", f"BK-none-{n}") for n in range(50)])])
    assert scalar(db, "SELECT count(*) FROM transactions") == 50
    assert scalar(db, "SELECT count(*) FROM bookings") == 0
    assert scalar(db, "SELECT count(*) FROM email_outbox") == 0


def stripe_event(event_id: str, kind: str, obj: dict[str, Any]) -> tuple[str, str, str, bytes]:
    body = {"id": event_id, "object": "event", "type": kind, "created": 1_700_000_000,
            "data": {"object": {**obj, "currency": "eur",
                                "metadata": {"booking_reference": "BK-S"}}}}
    return f"stripe:{event_id}", "stripe", kind, orjson.dumps(body)


INTENT = stripe_event("evt_paid", "payment_intent.succeeded", {
    "object": "payment_intent", "id": "pi_1", "amount": 30000, "amount_received": 30000,
    "status": "succeeded"})
REFUND = stripe_event("evt_refund", "charge.refunded", {
    "object": "charge", "id": "ch_1", "payment_intent": "pi_1", "amount": 30000,
    "amount_captured": 30000, "amount_refunded": 30000, "refunded": True})


@pytest.mark.parametrize("order", [
    [created("BK-S", "s@example.com"), INTENT, REFUND],
    [REFUND, INTENT, created("BK-S", "s@example.com")],
])
def test_a_stripe_payment_confirms_its_booking_and_its_refund_refunds_it(
        db: psycopg.Connection, order: list[tuple[str, str, str, bytes]]) -> None:
    project(db, [records(order[:1]), records(order[1:], first=1)])
    bookings, emails = snapshot(db)
    assert [row[:5] for row in bookings] == [("BK-S", "refunded", False, False, True)]
    assert [template for _, template, _, _ in emails] == [
        "booking_confirmation", "payment_confirmation"]
