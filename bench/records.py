"""Realistic mixed log records for the benchmarks: every source, with duplicates."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson

from hookline.log.envelope import encode


def transaction(n: int) -> tuple[str, str, str, bytes]:
    body = {"transaction_id": f"tx-{n}", "source_account": f"acct-{n % 997}",
            "destination_account": "acct-hotel", "amount": f"{n % 900 + 10}.50",
            "currency": "EUR", "booking_reference": f"BK-{n}"}
    return f"transactions:tx-{n}", "transactions", "transaction.succeeded", orjson.dumps(body)


def stripe(n: int) -> tuple[str, str, str, bytes]:
    body = {"id": f"evt_{n}", "object": "event", "type": "payment_intent.succeeded",
            "created": 1_700_000_000 + n, "data": {"object": {
                "id": f"pi_{n}", "object": "payment_intent", "amount": 12_990 + n % 100,
                "amount_received": 12_990 + n % 100, "currency": "usd", "status": "succeeded",
                "metadata": {"booking_reference": f"BK-{n}"}, "latest_charge": f"ch_{n}"}}}
    return f"stripe:evt_{n}", "stripe", "payment_intent.succeeded", orjson.dumps(body)


def chapa(n: int) -> tuple[str, str, str, bytes]:
    body = {"event": "charge.success", "tx_ref": f"BK-{n}", "reference": f"AP{n}",
            "status": "success", "amount": "400.00", "currency": "ETB", "charge": "12.00",
            "mode": "live", "type": "API", "email": None, "meta": None,
            "created_at": "2023-08-27T19:21:18.000000Z"}
    key = hashlib.sha256(f"BK-{n}|AP{n}|charge.success|success".encode()).hexdigest()
    return f"chapa:{key}", "chapa", "charge.success", orjson.dumps(body)


def booking(n: int) -> tuple[str, str, str, bytes]:
    body = {"type": "booking.created", "booking": {
        "reference": f"BK-{n}", "customer": {"email": f"guest{n}@example.com",
                                             "name": f"Guest {n}"},
        "destination": "Lisbon", "travel_date": "2027-05-01", "return_date": "2027-05-08",
        "travelers": 2, "total_amount": "129.90", "currency": "USD",
        "created_at": "2026-11-22T10:00:00Z"}}
    return f"bookings:msg_{n}", "bookings", "booking.created", orjson.dumps(body)


KINDS = (transaction, stripe, chapa, booking)


def mixed(count: int, duplicate_share: float = 0.05, seed: int = 7) -> Iterator[tuple[str, bytes]]:
    """(envelope id, record) pairs: the four sources in turn, some records sent again."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    sent: list[int] = []  # numbers, not records: a million records would take a gigabyte
    for n in range(count):
        if sent and rng.random() < duplicate_share:
            yield _record(rng.choice(sent), now)
            continue
        sent.append(n)
        yield _record(n, now)


def _record(n: int, now: datetime) -> tuple[str, bytes]:
    envelope_id, source, kind, payload = KINDS[n % len(KINDS)](n)
    return envelope_id, encode(envelope_id, source, kind, f"BK-{n}", now, payload)
