"""Domain events: what a log record means, once a source has interpreted it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

PaymentStatus = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class PaymentReported:
    """A provider told us the state of a payment or transfer."""

    transaction_id: str
    status: PaymentStatus
    amount: Decimal | None = None
    currency: str | None = None
    booking_reference: str | None = None
    source_account: str | None = None
    destination_account: str | None = None
    provider_reference: str | None = None
    failure_reason: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PaymentRefunded:
    """A payment was refunded; `amount_refunded` is the running total the provider reports,
    or with `running_total` false the amount of this one refund (each reported once)."""

    transaction_id: str
    amount_refunded: Decimal
    currency: str | None = None
    occurred_at: datetime | None = None
    running_total: bool = True


@dataclass(frozen=True, slots=True)
class PaymentTimedOut:
    """A payment stayed pending past the payment timeout; `source` is the payment's (None in
    records written before transactions were keyed by source: every row with the id)."""

    transaction_id: str
    source: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentDisputed:
    """The payer disputed a payment."""

    transaction_id: str


PaymentEvent = PaymentReported | PaymentRefunded | PaymentTimedOut | PaymentDisputed


@dataclass(frozen=True, slots=True)
class BookingCreated:
    """The booking application created a booking that awaits payment."""

    reference: str
    customer_email: str
    customer_name: str
    destination: str
    travel_date: date
    return_date: date | None
    travelers: int
    total_amount: Decimal
    currency: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BookingCancelled:
    """The booking application cancelled a booking."""

    reference: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BookingExpired:
    """A booking stayed unpaid past its deadline."""

    reference: str


BookingEvent = BookingCreated | BookingCancelled | BookingExpired
DomainEvent = PaymentEvent | BookingEvent


class Rejected(Exception):
    """A record that is in the log but cannot be interpreted; the message says why."""
