"""Deadlines: records hookline appends itself when a booking or a payment waited too long.

There is no HTTP endpoint. Ids are deterministic, so however many schedulers notice the same
deadline, the projector applies it once and records the rest as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from hookline.config import Settings
from hookline.domain.events import BookingExpired, DomainEvent, PaymentTimedOut
from hookline.log.envelope import Envelope, encode, envelope_id
from hookline.senders.base import Fields, Ingress

NAME = "scheduler"
BOOKING_EXPIRED, PAYMENT_TIMED_OUT = "booking.expired", "payment.timed_out"


@dataclass(frozen=True, slots=True)
class Deadline:
    """One record to append: its id, what it is about, and the body of the log record."""

    id: str
    kind: str
    subject: str
    record: bytes


def ingress(_settings: Settings) -> Ingress | None:
    return None  # appended by `hookline schedule`, never posted


def booking_expired(reference: str, expires_at: datetime, now: datetime) -> Deadline:
    payload = {"reference": reference, "expires_at": expires_at}
    return _deadline(BOOKING_EXPIRED, reference, reference, payload, now)


def payment_timed_out(source: str, transaction_id: str, booking_reference: str | None,
                      pending_since: datetime, now: datetime) -> Deadline:
    """A payment is one source's: the record names both (two sources may share an id)."""
    payload = {"transaction_id": transaction_id, "source": source,
               "pending_since": pending_since}
    return _deadline(PAYMENT_TIMED_OUT, f"{source}:{transaction_id}",
                     booking_reference or transaction_id, payload, now)


def _deadline(kind: str, key: str, subject: str, payload: dict[str, Any],
              now: datetime) -> Deadline:
    record_id = envelope_id(NAME, f"{kind}:{key}")
    body = orjson.dumps(payload, option=orjson.OPT_UTC_Z)
    return Deadline(record_id, kind, subject, encode(record_id, NAME, kind, subject, now, body))


def interpret(envelope: Envelope) -> list[DomainEvent]:
    if envelope.type not in (BOOKING_EXPIRED, PAYMENT_TIMED_OUT):
        return []
    record = Fields(envelope.payload(), envelope.type)
    if envelope.type == BOOKING_EXPIRED:
        return [BookingExpired(reference=record.text("reference"))]
    # `source` is absent from records written before it was named
    return [PaymentTimedOut(transaction_id=record.text("transaction_id"),
                            source=record.parsed("source", str, optional=True))]
