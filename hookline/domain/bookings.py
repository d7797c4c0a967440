"""Booking state rules, joined with the booking's payments; pure, no I/O.

A booking's status and flags are a function of its own events (in log order) and of the set of
transactions that carry its reference, whichever of the two arrived first:
pending → confirmed (a succeeded payment covers the total in its currency) | cancelled | expired;
confirmed → cancelled | refunded (every covering payment refunded; also after a cancellation, so
that a refund and a cancellation give the same result in either order).
A payment for a booking that left `pending` unpaid raises `late_payment`; a payment that does not
cover the total raises `amount_mismatch`. Neither changes the status. Only trusted payments
count: one known only from senders ingress could not verify confirms nothing, raises no flag
and sends no email.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from hookline.domain.events import BookingCancelled, BookingCreated, BookingEvent, BookingExpired
from hookline.domain.transactions import TransactionState

PAID = frozenset({"succeeded", "partially_refunded", "refunded"})
Template = Literal["booking_confirmation", "payment_confirmation", "payment_failure"]


# not frozen, for the projector's speed (see TransactionState); never changed once made
@dataclass(slots=True)
class BookingState:
    """One row of `bookings`; the booking's own fields are None until booking.created arrives."""

    reference: str
    status: str
    updated_at: datetime
    last_offset: int
    customer_email: str | None = None
    customer_name: str | None = None
    destination: str | None = None
    travel_date: date | None = None
    return_date: date | None = None
    travelers: int | None = None
    total_amount: Decimal | None = None
    currency: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    confirmed_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    late_payment: bool = False
    amount_mismatch: bool = False

    @property
    def known(self) -> bool:
        """True once booking.created was projected (a cancellation may come first)."""
        return self.customer_email is not None


@dataclass(frozen=True, slots=True)
class PaymentChange:
    """A transaction's state before and after one record of the log."""

    offset: int
    before: TransactionState | None
    after: TransactionState


@dataclass(frozen=True, slots=True)
class Notice:
    """An email the customer is owed because of the record at `offset`."""

    template: Template
    booking: BookingState
    offset: int
    payment: TransactionState | None = None


def payment_key(payment: TransactionState) -> tuple[str, str]:
    """A payment's identity: the same id from two sources is two payments."""
    return payment.transaction_id, payment.source


def covers(booking: BookingState, payment: TransactionState) -> bool:
    return (payment.currency == booking.currency and payment.amount is not None
            and booking.total_amount is not None and payment.amount >= booking.total_amount)


def apply_event(state: BookingState | None, event: BookingEvent, offset: int, now: datetime,
                at: datetime, ttl: timedelta) -> BookingState | None:
    """The booking after one of its own events (`at` is when it was received), before payments."""
    match event:
        case BookingCreated():
            base = state or BookingState(event.reference, "pending", now, offset)
            return base if base.known else _with_booking(base, event, ttl)
        case BookingCancelled():
            base = state or BookingState(event.reference, "pending", now, offset)
            if base.status not in ("pending", "confirmed", "refunded"):
                return base
            status = "refunded" if base.status == "refunded" else "cancelled"
            return replace(base, status=status, cancelled_at=at, cancel_reason=event.reason)
        case BookingExpired():
            if state is None or state.status != "pending":
                return state
            return replace(state, status="expired")


def _with_booking(state: BookingState, event: BookingCreated, ttl: timedelta) -> BookingState:
    return replace(
        state, customer_email=event.customer_email, customer_name=event.customer_name,
        destination=event.destination, travel_date=event.travel_date,
        return_date=event.return_date, travelers=event.travelers,
        total_amount=event.total_amount, currency=event.currency,
        created_at=event.created_at, expires_at=event.created_at + ttl,
    )


def settle(state: BookingState, payments: Iterable[TransactionState],
           at: datetime) -> BookingState:
    """The booking given every transaction with its reference; `at` dates a confirmation."""
    if not state.known:
        return state
    paid = [p for p in payments if p.status in PAID and p.trusted]
    covering = [p for p in paid if covers(state, p)]
    status, confirmed_at = state.status, state.confirmed_at
    if status == "pending" and covering:
        status, confirmed_at = "confirmed", at
    if confirmed_at is not None:  # once paid, derived from the payments: order cannot matter
        refunded = bool(covering) and all(p.status == "refunded" for p in covering)
        status = "refunded" if refunded else "cancelled" if state.cancelled_at else "confirmed"
    return replace(
        state, status=status, confirmed_at=confirmed_at,
        late_payment=state.late_payment or (
            confirmed_at is None and status in ("expired", "cancelled") and bool(paid)),
        amount_mismatch=state.amount_mismatch or any(
            _priced(p) and not covers(state, p) for p in paid),
    )


def _priced(payment: TransactionState) -> bool:
    """A refund can be heard of before the payment's amount: judge only what is known."""
    return payment.amount is not None and payment.currency is not None


@dataclass
class Ledger:
    """Bookings and their payments during one batch, advanced one record at a time."""

    bookings: dict[str, BookingState]
    payments: dict[str, dict[tuple[str, str], TransactionState]]
    ttl: timedelta
    now: datetime
    changed: dict[str, BookingState] = field(default_factory=dict)

    def on_booking(self, event: BookingEvent, offset: int, at: datetime) -> list[Notice]:
        before = self.bookings.get(event.reference)
        after = apply_event(before, event, offset, self.now, at, self.ttl)
        if after is None:
            return []
        return self._settle(before, after, offset, at, None)

    def on_payment(self, change: PaymentChange, at: datetime) -> list[Notice]:
        reference = change.after.booking_reference
        if reference is None:
            return []
        self.payments.setdefault(reference, {})[payment_key(change.after)] = change.after
        before = self.bookings.get(reference)
        if before is None:
            return []
        return self._settle(before, before, change.offset, at, change)

    def _settle(self, before: BookingState | None, after: BookingState, offset: int,
                at: datetime, change: PaymentChange | None) -> list[Notice]:
        payments = self.payments.get(after.reference, {})
        after = settle(after, payments.values(), at)
        if after != before:
            after = replace(after, updated_at=self.now, last_offset=offset)
            self.bookings[after.reference] = self.changed[after.reference] = after
        return notices(before, after, offset, change, payments)


def notices(before: BookingState | None, after: BookingState, offset: int,
            change: PaymentChange | None,
            payments: Mapping[tuple[str, str], TransactionState]) -> list[Notice]:
    """The emails one record makes due: each transition is crossed at most once."""
    if not after.known:
        return []
    found: list[Notice] = []
    created = before is None or not before.known
    if created and after.status not in ("cancelled", "expired"):  # not ended before it began
        found.append(Notice("booking_confirmation", after, offset))
    if after.confirmed_at is not None and (before is None or before.confirmed_at is None):
        paid = [p for p in payments.values()
                if p.status in PAID and p.trusted and covers(after, p)]
        found.append(Notice("payment_confirmation", after, offset, min(paid, key=_by_id)))
    failed = _failed_payment(created, change, payments)
    if failed is not None and after.status == "pending":
        found.append(Notice("payment_failure", after, offset, failed))
    return found


def _failed_payment(created: bool, change: PaymentChange | None,
                    payments: Mapping[tuple[str, str], TransactionState],
                    ) -> TransactionState | None:
    """The trusted payment that just failed, or on creation the last one that had failed."""
    if change is not None:
        was_failed = change.before is not None and change.before.status == "failed" \
            and change.before.trusted
        failed_now = change.after.status == "failed" and change.after.trusted
        return change.after if failed_now and not was_failed else None
    failed = [p for p in payments.values() if p.status == "failed" and p.trusted]
    return max(failed, key=lambda p: (p.last_offset, *payment_key(p))) if created and failed \
        else None


def _by_id(payment: TransactionState) -> tuple[str, str]:
    return payment_key(payment)
