"""Booking rules joined with payments: order and repetition of arrivals do not change the result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from hookline.domain import transactions
from hookline.domain.bookings import BookingState, Ledger, Notice, PaymentChange
from hookline.domain.events import (
    BookingCancelled,
    BookingCreated,
    BookingEvent,
    BookingExpired,
    DomainEvent,
    PaymentRefunded,
    PaymentReported,
)
from hookline.domain.transactions import TransactionState

REF = "BK-1"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)
CREATED = BookingCreated(REF, "ada@example.com", "Ada", "Lalibela", date(2026, 6, 1),
                         date(2026, 6, 8), 2, Decimal("100.00"), "EUR", NOW)
# each payment keeps one amount and currency, as providers report them
PRICES = {"tx-full": (Decimal("100.00"), "EUR"), "tx-more": (Decimal("120"), "EUR"),
          "tx-short": (Decimal("40.00"), "EUR"), "tx-usd": (Decimal("100.00"), "USD")}


@dataclass
class Outcome:
    booking: BookingState | None
    notices: list[Notice]

    def summary(self) -> tuple[object, ...]:
        b = self.booking
        assert b is not None
        return (b.status, b.confirmed_at is not None, b.late_payment, b.amount_mismatch,
                b.expires_at, b.customer_email, b.total_amount)

    def templates(self, *without: str) -> Counter[str]:
        return Counter(n.template for n in self.notices if n.template not in without)


def project(events: list[DomainEvent]) -> Outcome:
    """A projector in miniature: transactions rules, then the booking ledger, in order."""
    ledger = Ledger({}, {}, TTL, NOW)
    states: dict[str, TransactionState] = {}
    notices: list[Notice] = []
    for offset, event in enumerate(events):
        if isinstance(event, BookingEvent):
            notices += ledger.on_booking(event, offset, NOW + timedelta(seconds=offset))
            continue
        before = states.get(event.transaction_id)
        after = transactions.apply(before, event, "transactions", offset, NOW)
        if after is not None:
            states[event.transaction_id] = after
            notices += ledger.on_payment(PaymentChange(offset, before, after), NOW)
    return Outcome(ledger.bookings.get(REF), notices)


def status(outcome: Outcome) -> str:
    assert outcome.booking is not None
    return outcome.booking.status


def reported(tx: str, status: str, reason: str | None = None) -> PaymentReported:
    amount, currency = PRICES[tx]
    return PaymentReported(tx, status, amount, currency, REF,  # type: ignore[arg-type]
                           failure_reason=reason, occurred_at=NOW)


payment_events = st.one_of(
    st.builds(reported, st.sampled_from(sorted(PRICES)),
              st.sampled_from(["pending", "succeeded", "failed"]), st.just("card declined")),
    st.builds(lambda tx, part: PaymentRefunded(tx, PRICES[tx][0] * part, PRICES[tx][1]),
              st.sampled_from(sorted(PRICES)), st.sampled_from([Decimal(1), Decimal("0.5")])),
)


@st.composite
def shuffled_with_repeats(draw: st.DrawFn, events: list[DomainEvent]) -> list[DomainEvent]:
    repeated = events + draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    return draw(st.permutations(repeated))


@given(st.data(), st.lists(payment_events, min_size=1, max_size=6))
def test_booking_and_payments_in_any_order_or_repeated_end_the_same(
        data: st.DataObject, payments: list[DomainEvent]) -> None:
    reference = project([CREATED, *payments])
    arrival = project(data.draw(shuffled_with_repeats([CREATED, *payments])))

    assert arrival.summary() == reference.summary()
    # a failure email depends on whether the payment failed while the booking still waited
    assert arrival.templates("payment_failure") == reference.templates("payment_failure")
    assert max(arrival.templates().values()) <= len(PRICES)
    assert arrival.templates()["booking_confirmation"] == 1
    assert arrival.templates()["payment_confirmation"] <= 1


@given(st.data(), st.sampled_from([BookingExpired(REF), BookingCancelled(REF, "changed plans")]),
       st.lists(payment_events, min_size=1, max_size=6))
def test_payments_after_expiry_or_cancellation_only_raise_the_late_flag(
        data: st.DataObject, ended: BookingEvent, payments: list[DomainEvent]) -> None:
    reference = project([CREATED, ended, *payments])
    arrival = project([CREATED, ended, *data.draw(shuffled_with_repeats(payments))])

    assert arrival.summary() == reference.summary()
    booking = arrival.booking
    assert booking is not None
    assert booking.status == ("expired" if isinstance(ended, BookingExpired) else "cancelled")
    assert booking.confirmed_at is None
    states = project(payments).notices  # no booking: nothing to tell anyone
    assert states == []
    assert "payment_confirmation" not in arrival.templates()
    assert "payment_failure" not in arrival.templates()


def test_a_payment_before_its_booking_confirms_it_with_the_same_emails() -> None:
    paid = reported("tx-full", "succeeded")
    first = project([CREATED, paid])
    later = project([paid, CREATED])

    assert later.summary() == first.summary()
    assert status(later) == "confirmed"
    assert later.templates() == first.templates() == Counter(
        {"booking_confirmation": 1, "payment_confirmation": 1})


def test_a_short_or_foreign_currency_payment_flags_a_mismatch_and_leaves_it_pending() -> None:
    for tx in ("tx-short", "tx-usd"):
        outcome = project([CREATED, reported(tx, "succeeded")])
        assert outcome.booking is not None
        assert (outcome.booking.status, outcome.booking.amount_mismatch) == ("pending", True)


def test_an_expired_booking_paid_late_keeps_its_status_and_sends_no_confirmation() -> None:
    outcome = project([CREATED, BookingExpired(REF), reported("tx-full", "succeeded")])
    assert outcome.booking is not None
    assert (outcome.booking.status, outcome.booking.late_payment) == ("expired", True)
    assert outcome.templates() == Counter({"booking_confirmation": 1})


def test_expiry_applies_only_to_a_pending_booking() -> None:
    outcome = project([CREATED, reported("tx-full", "succeeded"), BookingExpired(REF)])
    assert outcome.booking is not None
    assert (outcome.booking.status, outcome.booking.late_payment) == ("confirmed", False)


def test_a_confirmed_booking_whose_payment_is_refunded_becomes_refunded() -> None:
    refund = PaymentRefunded("tx-full", Decimal("100.00"), "EUR")
    outcome = project([CREATED, reported("tx-full", "succeeded"), refund])
    assert status(outcome) == "refunded"

    partial = PaymentRefunded("tx-full", Decimal("10.00"), "EUR")
    outcome = project([CREATED, reported("tx-full", "succeeded"), partial])
    assert status(outcome) == "confirmed"


def test_a_confirmed_booking_can_be_cancelled_without_a_late_flag() -> None:
    outcome = project([CREATED, reported("tx-full", "succeeded"), BookingCancelled(REF)])
    assert outcome.booking is not None
    assert (outcome.booking.status, outcome.booking.late_payment) == ("cancelled", False)


def test_a_failed_payment_for_a_pending_booking_owes_one_failure_email_with_its_reason() -> None:
    failed = reported("tx-short", "failed", "insufficient funds")
    outcome = project([CREATED, failed, failed])
    failures = [n for n in outcome.notices if n.template == "payment_failure"]
    assert len(failures) == 1
    assert failures[0].payment is not None
    assert failures[0].payment.failure_reason == "insufficient funds"

    before = project([failed, CREATED])
    assert before.templates() == outcome.templates()


def test_a_failed_payment_for_a_confirmed_booking_owes_nothing() -> None:
    outcome = project([CREATED, reported("tx-full", "succeeded"),
                       reported("tx-short", "failed")])
    assert "payment_failure" not in outcome.templates()


def test_a_cancellation_before_the_booking_keeps_it_cancelled_and_silent() -> None:
    outcome = project([BookingCancelled(REF, "duplicate"), CREATED])
    assert outcome.booking is not None
    assert (outcome.booking.status, outcome.booking.cancel_reason) == ("cancelled", "duplicate")
    assert outcome.booking.customer_email == "ada@example.com"
    assert outcome.notices == []


def test_the_deadline_is_the_creation_time_plus_the_ttl() -> None:
    outcome = project([CREATED])
    assert outcome.booking is not None
    assert outcome.booking.expires_at == NOW + TTL
