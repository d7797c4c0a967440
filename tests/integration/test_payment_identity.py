"""A payment is one source's, each report a whole fact, references never guessed: projected
through project_batch into PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.log.envelope import encode
from hookline.log.reader import Record
from hookline.projection.batch import project_batch
from hookline.senders.registry import interpreters
from tests.processes import scalar

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "providers"
NOW = datetime.now(UTC).replace(microsecond=0)
Entry = tuple[str, str, str, bytes]


def records(entries: list[Entry], first: int = 0) -> list[Record]:
    return [Record(first + n, encode(record_id, source, kind, "subject",
                                     NOW + timedelta(seconds=n), payload))
            for n, (record_id, source, kind, payload) in enumerate(entries)]


def project(conn: psycopg.Connection, entries: list[Entry]) -> None:
    project_batch(conn, "projector", records(entries), -1, interpreters(), booking_ttl=3600)


def generic(tx: str, status: str, amount: str, currency: str, **extra: Any) -> Entry:
    body = {"transaction_id": tx, "source_account": "acct-guest",
            "destination_account": "acct-hotel", "amount": amount, "currency": currency,
            "status": status, **extra}
    return f"transactions:{tx}:{status}", "transactions", f"transaction.{status}", \
        orjson.dumps(body)


def booking(reference: str, total: str, currency: str) -> Entry:
    created = {"reference": reference, "customer": {"email": "guest@example.com",
                                                    "name": "Guest"},
               "destination": "Axum", "travel_date": "2026-09-01", "travelers": 1,
               "total_amount": total, "currency": currency, "created_at": NOW}
    return (f"bookings:{reference}", "bookings", "booking.created",
            orjson.dumps({"type": "booking.created", "booking": created}))


def chapa(name: str, record_id: str, **changes: Any) -> Entry:
    payload = {**json.loads((FIXTURES / f"chapa_{name}.json").read_text()), **changes}
    return f"chapa:{record_id}", "chapa", payload["event"], orjson.dumps(payload)


def outcome(conn: psycopg.Connection, record_id: str) -> tuple[str, str | None]:
    row = conn.execute("SELECT outcome, error FROM events WHERE id = %s", (record_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_status_update_whose_money_differs_is_rejected_as_a_conflict(
        db: psycopg.Connection) -> None:
    project(db, [generic("tx-4", "pending", "100", "USD"),
                 generic("tx-4", "succeeded", "5000", "EUR")])
    row = db.execute("SELECT status, amount, currency FROM transactions "
                     "WHERE transaction_id = 'tx-4'").fetchone()
    assert row == ("pending", Decimal("100"), "USD")  # never "100.00 EUR", nor succeeded
    found, error = outcome(db, "transactions:tx-4:succeeded")
    assert found == "rejected"
    assert error is not None
    assert error.startswith("conflict:")


def test_a_payment_that_failed_then_succeeded_has_no_failure_reason(
        db: psycopg.Connection) -> None:
    project(db, [generic("tx-5", "failed", "80.00", "EUR", failure_reason="card declined"),
                 generic("tx-5", "succeeded", "80.00", "EUR")])
    row = db.execute("SELECT status, failure_reason FROM transactions "
                     "WHERE transaction_id = 'tx-5'").fetchone()
    assert row == ("succeeded", None)
    # the failure stays in the trail
    assert outcome(db, "transactions:tx-5:failed") == ("applied", None)


def test_a_checkouts_client_reference_id_is_not_a_booking_reference(
        db: psycopg.Connection) -> None:
    event = json.loads((FIXTURES / "stripe_checkout.session.completed.json").read_text())
    user = event["data"]["object"]["client_reference_id"]  # a user id in this real checkout
    project(db, [booking(user, "20.00", "USD"),
                 (f"stripe:{event['id']}", "stripe", event["type"], orjson.dumps(event))])
    assert scalar(db, "SELECT booking_reference FROM transactions") is None
    assert scalar(db, "SELECT status FROM bookings") == "pending"


def test_a_chapa_payment_names_a_booking_only_in_meta_object_or_json_string(
        db: psycopg.Connection) -> None:
    project(db, [booking("BK-TX", "400.00", "ETB"), booking("BK-OBJ", "400.00", "ETB"),
                 booking("BK-STR", "400.00", "ETB"),
                 chapa("charge.success", "1", tx_ref="BK-TX"),
                 chapa("charge.success", "2", tx_ref="tx-obj",
                       meta={"booking_reference": "BK-OBJ"}),
                 chapa("charge.success", "3", tx_ref="tx-str",
                       meta='{"booking_reference": "BK-STR"}')])
    references = dict(db.execute("SELECT transaction_id, booking_reference FROM transactions"))
    assert references == {"BK-TX": None, "tx-obj": "BK-OBJ", "tx-str": "BK-STR"}
    statuses = dict(db.execute("SELECT reference, status FROM bookings"))
    assert statuses == {"BK-TX": "pending", "BK-OBJ": "confirmed", "BK-STR": "confirmed"}


def test_a_stripe_amount_from_ten_to_the_fifteen_up_is_rejected(db: psycopg.Connection) -> None:
    body = {"id": "evt_huge", "object": "event", "type": "payment_intent.succeeded",
            "created": 1_700_000_000, "data": {"object": {
                "object": "payment_intent", "id": "pi_huge", "amount": 18 * 10**18,
                "amount_received": 18 * 10**18, "currency": "usd", "metadata": {}}}}
    project(db, [("stripe:evt_huge", "stripe", body["type"], orjson.dumps(body))])
    assert outcome(db, "stripe:evt_huge")[0] == "rejected"
    assert scalar(db, "SELECT count(*) FROM transactions") == 0


def test_a_timeout_names_its_payments_source(db: psycopg.Connection) -> None:
    from hookline.senders.deadlines import payment_timed_out

    deadline = payment_timed_out("transactions", "pi_T", None, NOW, NOW)
    stripe_pending = {"id": "evt_p", "object": "event", "type": "payment_intent.processing",
                      "created": 1_700_000_000, "data": {"object": {
                          "object": "payment_intent", "id": "pi_T", "amount": 1000,
                          "currency": "eur", "metadata": {}}}}
    project(db, [generic("pi_T", "pending", "10.00", "EUR"),
                 ("stripe:evt_p", "stripe", stripe_pending["type"], orjson.dumps(stripe_pending)),
                 (deadline.id, "scheduler", "payment.timed_out",
                  orjson.dumps({"transaction_id": "pi_T", "source": "transactions"}))])
    statuses = dict(db.execute("SELECT source, status FROM transactions"))
    assert statuses == {"transactions": "timed_out", "stripe": "pending"}


def test_a_timeout_written_before_sources_were_named_times_out_every_row_with_the_id(
        db: psycopg.Connection) -> None:
    project(db, [generic("tx-old", "pending", "10.00", "EUR"),
                 chapa("charge.success", "c1", tx_ref="tx-old"),
                 ("scheduler:payment.timed_out:tx-old", "scheduler", "payment.timed_out",
                  orjson.dumps({"transaction_id": "tx-old"}))])
    statuses = dict(db.execute("SELECT source, status FROM transactions"))
    assert statuses == {"transactions": "timed_out", "chapa": "succeeded"}


# --- property: no row holds what its own source did not send ---------------------------------

IDS = ["pi_shared", "tx-shared"]
Sent = dict[tuple[str, str], dict[str, set[Any]]]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Entry], list[bool], Sent]:
    """Deliveries from every source about a few shared ids, each remembered as sent."""
    entries: list[Entry] = []
    trusted: list[bool] = []
    sent: Sent = {}
    for n in range(draw(st.integers(1, 12))):
        source = draw(st.sampled_from(["transactions", "stripe", "chapa"]))
        tx = draw(st.sampled_from(IDS))
        cents = draw(st.integers(1, 50_000))
        fields = {"amount": Decimal(cents).scaleb(-2), "currency": "EUR",
                  "booking_reference": draw(st.sampled_from([None, "BK-1", "BK-2"]))}
        status = draw(st.sampled_from(["pending", "succeeded", "failed"]))
        if source == "transactions":
            fields["source_account"] = draw(st.sampled_from(["acct-a", "acct-b"]))
            entry = generic(tx, status, str(fields["amount"]), "EUR",
                            source_account=fields["source_account"],
                            booking_reference=fields["booking_reference"])
            entry = (f"transactions:{n}", *entry[1:])
        elif source == "stripe":
            entry = stripe_intent(n, tx, status, cents, fields["booking_reference"])
        else:
            fields["provider_reference"] = f"ref-{n}"
            meta = {"booking_reference": fields["booking_reference"]}
            entry = chapa("charge.success" if status != "failed" else "charge.failed_cancelled",
                          str(n), tx_ref=tx, amount=str(fields["amount"]), currency="EUR",
                          reference=fields["provider_reference"], meta=meta)
        entries.append(entry)
        trusted.append(source == "stripe" or draw(st.booleans()))
        for name, value in fields.items():
            sent.setdefault((tx, source), {}).setdefault(name, set()).add(value)
    return entries, trusted, sent


def stripe_intent(n: int, tx: str, status: str, cents: int, reference: str | None) -> Entry:
    kind = {"pending": "payment_intent.processing", "succeeded": "payment_intent.succeeded",
            "failed": "payment_intent.payment_failed"}[status]
    body = {"id": f"evt_{n}", "object": "event", "type": kind, "created": 1_700_000_000,
            "data": {"object": {"object": "payment_intent", "id": tx, "amount": cents,
                                "amount_received": cents if status == "succeeded" else 0,
                                "currency": "eur",
                                "metadata": {"booking_reference": reference}}}}
    return f"stripe:evt_{n}", "stripe", kind, orjson.dumps(body)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=deliveries(), size=st.integers(1, 5))
def test_no_row_ever_holds_a_field_its_own_source_did_not_send(
        db: psycopg.Connection, history: tuple[list[Entry], list[bool], Sent],
        size: int) -> None:
    db.execute("TRUNCATE events, transactions, bookings, consumer_offsets, email_outbox")
    entries, trusted, sent = history
    log = [Record(n, encode(record_id, source, kind, "subject", NOW, payload, trust))
           for n, ((record_id, source, kind, payload), trust)
           in enumerate(zip(entries, trusted, strict=True))]
    expected = -1
    for i in range(0, len(log), size):
        project_batch(db, "projector", log[i:i + size], expected, interpreters())
        expected = log[min(i + size, len(log)) - 1].offset
    columns = ("amount", "currency", "booking_reference", "source_account",
               "provider_reference")
    for row in db.execute("SELECT transaction_id, source, amount, currency, booking_reference, "
                          "source_account, provider_reference FROM transactions").fetchall():
        own = sent[(row[0], row[1])]
        for name, value in zip(columns, row[2:], strict=True):
            assert value is None or value in own.get(name, set()), (row[1], name, value)
