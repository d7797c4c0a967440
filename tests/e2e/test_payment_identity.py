"""One identity per provider payment, and only verified senders move money, end to end: signed
Stripe, Chapa and booking deliveries and unsigned generic transactions (allowed, untrusted)
through the real ingest, stream, projector, PostgreSQL and operator API."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import pytest

from hookline.senders.signatures import sign_chapa, sign_standard_webhooks, sign_stripe
from tests.processes import UNSIGNED_TRANSACTIONS, Pipeline, eventually, running_pipeline, scalar

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "providers"
STRIPE = "whsec_test_secret_for_stripe_0001"
CHAPA = "chapa-test-secret-for-webhooks-0001"
BOOKINGS = "whsec_" + base64.b64encode(b"bookings-identity-secret-32bytes").decode()


@pytest.fixture
def shop(env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    """Signed Stripe, Chapa and bookings; generic transactions unsigned (development)."""
    with running_pipeline({**env, "HOOKLINE_STRIPE_SECRETS": STRIPE,
                           "HOOKLINE_CHAPA_SECRETS": CHAPA, "HOOKLINE_BOOKINGS_SECRETS": BOOKINGS,
                           **UNSIGNED_TRANSACTIONS}, tmp_path) as pipeline:
        yield pipeline


def send(pipeline: Pipeline, source: str, body: bytes, headers: dict[str, str]) -> str:
    answer = pipeline.http.post(f"{pipeline.ingest_url}/v1/webhooks/{source}", data=body,
                                headers={"Content-Type": "application/json", **headers},
                                timeout=30)
    assert answer.status_code == 202, answer.text
    envelope_id: str = answer.json()["id"]
    return envelope_id


def book(pipeline: Pipeline, reference: str, total: str, currency: str) -> str:
    body = orjson.dumps({"type": "booking.created", "booking": {
        "reference": reference, "customer": {"email": "guest@example.com", "name": "Guest"},
        "destination": "Lalibela", "travel_date": "2026-10-02", "travelers": 2,
        "total_amount": total, "currency": currency, "created_at": "2026-09-01T10:00:00Z"}})
    msg_id, now = f"msg_{uuid.uuid4().hex}", int(time.time())
    return send(pipeline, "bookings", body, {
        "webhook-id": msg_id, "webhook-timestamp": str(now),
        "webhook-signature": sign_standard_webhooks(BOOKINGS, msg_id, now, body)})


def stripe_intent(pipeline: Pipeline, kind: str, intent: str, minor: int, reference: str) -> str:
    body = orjson.dumps({
        "id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind,
        "created": int(time.time()), "data": {"object": {
            "id": intent, "object": "payment_intent", "amount": minor, "amount_received": 0,
            "currency": "eur", "status": "processing",
            "metadata": {"booking_reference": reference}}}})
    return send(pipeline, "stripe", body,
                {"Stripe-Signature": sign_stripe(STRIPE, int(time.time()), body)})


def chapa(pipeline: Pipeline, name: str, **changes: Any) -> str:
    payload = {**json.loads((FIXTURES / f"chapa_{name}.json").read_text()), **changes}
    body = orjson.dumps(payload)
    return send(pipeline, "chapa", body, sign_chapa(CHAPA, body))


def unsigned(pipeline: Pipeline, tx: str, amount: str, currency: str, status: str,
             reference: str | None = None) -> str:
    body = orjson.dumps({"transaction_id": tx, "source_account": "acct-attacker",
                         "destination_account": "acct-attacker", "amount": amount,
                         "currency": currency, "status": status,
                         "booking_reference": reference})
    return send(pipeline, "transactions", body, {})


def projected(db: psycopg.Connection, count: int) -> None:
    def check() -> None:
        done = scalar(db, "SELECT count(*) FROM events")
        assert done == count, f"{done} of {count} records projected"
    eventually(check, timeout=30)


def row(db: psycopg.Connection, tx: str, source: str) -> tuple[Any, ...] | None:
    return db.execute("SELECT status, amount::text, currency, source_account, trusted "
                      "FROM transactions WHERE transaction_id = %s AND source = %s",
                      (tx, source)).fetchone()


def templates(db: psycopg.Connection, reference: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT template FROM email_outbox "
                                     "WHERE booking_reference = %s ORDER BY id", (reference,))]


def test_a_delivery_of_one_source_never_changes_a_payment_of_another(
        shop: Pipeline, db: psycopg.Connection) -> None:
    book(shop, "BK-ID-1", "150.00", "EUR")
    stripe_intent(shop, "payment_intent.processing", "pi_shared", 15000, "BK-ID-1")
    projected(db, 2)
    unsigned(shop, "pi_shared", "0.01", "EUR", "succeeded", "BK-ID-1")
    chapa(shop, "charge.success", tx_ref="pi_shared", currency="EUR", amount="0.01")
    projected(db, 4)

    assert db.execute("SELECT status, amount::text FROM transactions WHERE source = 'stripe' "
                      "AND transaction_id = 'pi_shared'").fetchone() == ("pending", "150.00")
    assert scalar(db, "SELECT status FROM bookings WHERE reference = 'BK-ID-1'") == "pending"
    assert row(db, "pi_shared", "stripe") == ("pending", "150.00", "EUR", None, True)
    assert row(db, "pi_shared", "transactions") == (
        "succeeded", "0.01", "EUR", "acct-attacker", False)
    assert row(db, "pi_shared", "chapa") == ("succeeded", "0.01", "EUR", None, True)
    assert scalar(db, "SELECT status FROM bookings WHERE reference = 'BK-ID-1'") == "pending"
    assert templates(db, "BK-ID-1") == ["booking_confirmation"]  # no payment email

    ambiguous = shop.get("/v1/transactions/pi_shared")
    assert ambiguous.status_code == 409, ambiguous.text
    assert ambiguous.json()["error"] == "ambiguous"
    assert sorted((c["source"], c["transaction_id"]) for c in ambiguous.json()["candidates"]) \
        == [("chapa", "pi_shared"), ("stripe", "pi_shared"), ("transactions", "pi_shared")]
    chosen = shop.get("/v1/transactions/pi_shared?source=stripe")
    assert chosen.status_code == 200, chosen.text
    assert (chosen.json()["source"], chosen.json()["status"], chosen.json()["amount"]) == (
        "stripe", "pending", "150.00")
    assert {e["source"] for e in chosen.json()["events"]} == {"stripe"}
    listed = shop.get("/v1/transactions?source=transactions").json()["items"]
    assert [(t["transaction_id"], t["trusted"]) for t in listed] == [("pi_shared", False)]


def test_an_unsigned_transaction_confirms_no_booking_and_is_shown_untrusted(
        shop: Pipeline, db: psycopg.Connection) -> None:
    book(shop, "BK-ID-2", "250.00", "EUR")
    unsigned(shop, "tx-unsigned", "250.00", "EUR", "succeeded", "BK-ID-2")
    projected(db, 2)
    assert scalar(db, "SELECT status FROM bookings WHERE reference = 'BK-ID-2'") == "pending"
    assert templates(db, "BK-ID-2") == ["booking_confirmation"]
    shown = shop.get("/v1/transactions/tx-unsigned").json()
    assert (shown["status"], shown["trusted"]) == ("succeeded", False)


def test_a_second_chapa_refund_of_one_charge_is_kept_and_a_retry_is_not(
        shop: Pipeline, db: psycopg.Connection) -> None:
    chapa(shop, "charge.success", tx_ref="tx-refunds")
    first = {"tx_ref": "tx-refunds", "amount": "100.00",
             "updated_at": "2023-08-28T09:00:00.000000Z"}
    chapa(shop, "charge.refunded", **first)
    chapa(shop, "charge.refunded", **first)  # Chapa's retry of the same refund
    chapa(shop, "charge.refunded", tx_ref="tx-refunds", amount="150.00",
          updated_at="2023-08-29T09:00:00.000000Z")
    projected(db, 4)
    assert db.execute("SELECT status, refunded_amount::text FROM transactions "
                      "WHERE transaction_id = 'tx-refunds'").fetchone() == (
        "partially_refunded", "250.00")
    assert scalar(db, "SELECT count(*) FROM events WHERE outcome = 'duplicate'") == 1


@pytest.mark.parametrize("tx", ["acct/2026/tx-1", "a b%41?#/c", "/leading", "trailing/"])
def test_an_id_with_any_allowed_character_can_be_read(
        shop: Pipeline, db: psycopg.Connection, tx: str) -> None:
    unsigned(shop, tx, "12.00", "EUR", "pending")
    projected(db, 1)
    for path in (quote(tx, safe="/"), quote(tx, safe="")):
        answer = shop.get(f"/v1/transactions/{path}")
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()["transaction_id"] == tx
    assert shop.get(f"/v1/transactions/{quote(tx, safe='')}?source=stripe").status_code == 404
