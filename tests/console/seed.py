"""What the console's tests look at: the operator lists' rows, and a few rows made on purpose —
a transaction whose payload holds a script, a booking with a dead email."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from hookline.config import Settings
from hookline.projection.batch import project_batch
from tests.integration.test_booking_projection import created
from tests.integration.test_reprocess import append, yesterday
from tests.operator_seed import seed

SECRET = "console-test-secret-0123456789abcdef"
XSS_ID = "tx-xss-1"
SCRIPT = "<script>alert('owned')</script>"
DEAD_RECIPIENT = "dead-letter@example.com"
BOOKING = "BK-CONSOLE-1"
REPROCESSED = "BK-REPROCESS-1"  # its booking.created was rejected by yesterday's code
REPROCESSED_EMAIL = "fixed@example.com"
CONTEXT = {"booking": {"reference": BOOKING, "customer_name": "Ada <b>Lovelace</b>",
                       "destination": "Lisbon", "travel_date": "Friday 01 May 2026",
                       "return_date": None, "travelers": 2, "total": "250.00 EUR",
                       "expires_at": "01 April 2026 at 10:00 UTC"},
           "payment": None}

_EVENT = """
INSERT INTO events ("offset", "partition", id, source, type, subject, received_at, projected_at,
    outcome, error, payload)
VALUES (%s, 0, %s, %s, %s, %s, now() - interval '5 minutes', now(), %s, %s, %s)
"""
_TRANSACTION = """
INSERT INTO transactions (transaction_id, source, booking_reference, amount, currency, status,
    created_at, processed_at, updated_at, last_offset, trusted)
VALUES (%s, 'transactions', %s, 250.00, 'EUR', 'succeeded', now(), now(), now(), %s, true)
"""
_BOOKING = """
INSERT INTO bookings (reference, status, customer_email, customer_name, destination, total_amount,
    currency, created_at, expires_at, updated_at, last_offset)
VALUES (%s, 'pending', %s, 'Ada Lovelace', 'Lisbon', 250.00, 'EUR', now(), now(), now(), %s)
"""
_DEAD_EMAIL = """
INSERT INTO email_outbox (event_id, template, booking_reference, recipient, context, status,
    attempts, next_attempt_at, last_error, created_at)
VALUES (%s, 'booking_confirmation', %s, %s, %s, 'dead', 8, now(), '550 mailbox unavailable', now())
RETURNING id
"""


def seed_console(db: psycopg.Connection[Any]) -> int:
    """The rows; the id of the dead email."""
    seed(db, transactions=80, bookings=60, events=120, emails=40, moments=20, references=30)
    payload = {"transaction_id": XSS_ID, "booking_reference": BOOKING, "amount": "250.00",
               "note": SCRIPT, "nested": {"amount": 10.990, "tags": ["a", "<img src=x>"]}}
    db.execute(_EVENT, (10_000, "transactions:evt-xss", "transactions", "transaction.succeeded",
                        XSS_ID, "applied", None, orjson.dumps(payload).decode()))
    db.execute(_EVENT, (10_001, "bookings:evt-console", "bookings", "booking.created", BOOKING,
                        "applied", None, orjson.dumps({"reference": BOOKING}).decode()))
    db.execute(_EVENT, (10_002, "transactions:evt-bad", "transactions", "transaction.succeeded",
                        "tx-bad-1", "rejected", "amount: missing", '{"amount": null}'))
    db.execute(_TRANSACTION, (XSS_ID, BOOKING, 10_000))
    db.execute(_BOOKING, (BOOKING, DEAD_RECIPIENT, 10_001))
    row = db.execute(_DEAD_EMAIL, ("bookings:evt-console", BOOKING, DEAD_RECIPIENT,
                                   orjson.dumps(CONTEXT).decode())).fetchone()
    assert row is not None
    return int(row[0])


def seed_rejected(settings: Settings, db: psycopg.Connection[Any]) -> None:
    """The log's one record (offset 0, which the rows above leave free): a booking.created that
    yesterday's interpretation rejected, projected so, as the reprocess tests make theirs."""
    records = append(settings, [(REPROCESSED, created(REPROCESSED, REPROCESSED_EMAIL))])
    project_batch(db, "projector", records, -1, yesterday())
