"""The emails a customer is owed: composed from a notice when projected, rendered at send.

The rows themselves are hookline.db.outbox's."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from hookline.db.outbox import Email
from hookline.domain.bookings import BookingState, Notice
from hookline.domain.currencies import format_amount
from hookline.domain.transactions import TransactionState


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("hookline.mail", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def compose(notice: Notice, event_id: str) -> Email:
    """The email a notice calls for; rendering waits for the mailer, off the projector's path."""
    booking = notice.booking
    if booking.customer_email is None:
        raise ValueError(f"booking {booking.reference!r} has no customer yet")
    return Email(
        event_id=event_id, template=notice.template, booking_reference=booking.reference,
        recipient=booking.customer_email,
        context={"booking": _booking_view(booking), "payment": _payment_view(notice.payment)},
    )


def render(template: str, context: dict[str, Any]) -> Rendered:
    subject = _template(f"{template}.subject.txt").render(context)
    return Rendered(
        subject=" ".join(subject.split()),  # one header line, whatever the data held
        text=_template(f"{template}.txt").render(context),
        html=_template(f"{template}.html").render(context),
    )


@functools.cache
def _template(name: str) -> Template:
    return _environment().get_template(name)


def _booking_view(booking: BookingState) -> dict[str, Any]:
    return {
        "reference": booking.reference,
        "customer_name": booking.customer_name,
        "destination": booking.destination,
        "travel_date": _day(booking.travel_date),
        "return_date": _day(booking.return_date),
        "travelers": booking.travelers,
        "total": f"{format_amount(booking.total_amount, booking.currency)} {booking.currency}",
        "expires_at": _moment(booking.expires_at),
    }


def _payment_view(payment: TransactionState | None) -> dict[str, Any] | None:
    if payment is None:
        return None
    return {
        "transaction_id": payment.transaction_id,
        "amount": f"{format_amount(payment.amount, payment.currency)} {payment.currency}"
        if payment.amount is not None else None,
        "reason": (payment.failure_reason or "the payment provider declined it").rstrip(". "),
    }


def _day(value: Any) -> str | None:
    return None if value is None else value.strftime("%A %d %B %Y")


def _moment(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%d %B %Y at %H:%M UTC")
