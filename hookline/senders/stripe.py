"""Stripe: `Stripe-Signature` over the raw body, events keyed by their id, and one
transaction per payment intent (checkout sessions and charges fold into their intent)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hookline.config import Settings
from hookline.domain.amounts import AmountInvalid, from_minor_units
from hookline.domain.currencies import exponent, is_currency
from hookline.domain.events import (
    DomainEvent,
    PaymentDisputed,
    PaymentRefunded,
    PaymentReported,
    PaymentStatus,
    Rejected,
)
from hookline.log.envelope import Envelope
from hookline.senders.base import REQUIRED, Delivery, Headers, PayloadInvalid, parse_object, text
from hookline.senders.signatures import StripeVerifier

NAME = "stripe"
log = logging.getLogger(__name__)
# Where Stripe's minor unit differs from ISO 4217 (Stripe's currencies guide, special cases).
_STRIPE_EXPONENTS = {"ISK": 2, "MGA": 0}


class StripeIngress:
    def __init__(self, verifier: StripeVerifier) -> None:
        self._verifier = verifier

    def accept(self, headers: Headers, body: bytes) -> Delivery:
        self._verifier.verify(headers.get("Stripe-Signature"), body)
        event = parse_object(body)
        key, kind = text(event.get("id")), text(event.get("type"))
        if key is None:
            raise PayloadInvalid("the event needs an id", {"id": REQUIRED})
        if kind is None:
            raise PayloadInvalid("the event needs a type", {"type": REQUIRED})
        return Delivery(key=key, type=kind, subject=subject(event) or key)


def ingress(settings: Settings) -> StripeIngress | None:
    if not settings.stripe_secrets:
        log.warning("HOOKLINE_STRIPE_SECRETS is not set: POST /v1/webhooks/stripe answers 404")
        return None
    return StripeIngress(StripeVerifier(settings.stripe_secrets, settings.stripe_tolerance))


def subject(event: dict[str, Any]) -> str | None:
    """The booking reference where the object carries one, else its payment intent's id."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None
    return booking_reference(obj) or payment_id(obj)


def booking_reference(obj: dict[str, Any]) -> str | None:
    """`metadata.booking_reference` only: client_reference_id is often a user id, not a
    booking, and a guessed reference could confirm the wrong booking."""
    metadata = obj.get("metadata")
    return text(metadata.get("booking_reference")) if isinstance(metadata, dict) else None


def payment_id(obj: dict[str, Any]) -> str | None:
    """The payment intent an object belongs to; a charge made without one is its own payment."""
    kind = obj.get("object")
    if kind == "payment_intent":
        return _id_of(obj.get("id"))
    intent = _id_of(obj.get("payment_intent"))
    if intent is not None:
        return intent
    if kind == "charge":
        return _id_of(obj.get("id"))
    if kind == "dispute":
        return _id_of(obj.get("charge"))
    return None


def interpret(envelope: Envelope) -> list[DomainEvent]:
    handler = _HANDLERS.get(envelope.type)
    if handler is None:
        return []
    event = envelope.payload()
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise Rejected(f"{envelope.type} needs data.object")
    return handler(_Object(envelope.type, obj, _occurred_at(event, obj, envelope)))


class _Object:
    """The event's data.object, read with the reason for a rejection at hand."""

    def __init__(self, kind: str, fields: dict[str, Any], occurred_at: datetime) -> None:
        self.kind, self.fields, self.occurred_at = kind, fields, occurred_at

    def rejected(self, what: str) -> Rejected:
        return Rejected(f"{self.kind} needs {what}")

    def payment_id(self) -> str:
        found = payment_id(self.fields)
        if found is None:
            raise self.rejected("data.object.payment_intent (or the id of its payment)")
        return found

    def currency(self) -> str:
        code = self.fields.get("currency")
        if not isinstance(code, str) or not code.isascii() or not is_currency(code.upper()):
            raise self.rejected("data.object.currency as an ISO 4217 code")
        return code.upper()

    def amount(self, field: str, currency: str) -> Decimal:
        minor = self.fields.get(field)
        if isinstance(minor, bool) or not isinstance(minor, int):
            raise self.rejected(f"data.object.{field} as a whole number of minor units")
        try:
            return major_units(minor, currency)
        except AmountInvalid as exc:
            raise self.rejected(f"data.object.{field} that is an amount: it {exc}") from None

    def failure_reason(self) -> str | None:
        error = self.fields.get("last_payment_error")
        message = text(error.get("message")) if isinstance(error, dict) else None
        reason = text(self.fields.get("cancellation_reason"))
        return message or (f"canceled: {reason}" if reason else None)


def major_units(minor: int, currency: str) -> Decimal:
    """Stripe's minor units of an upper-case ISO 4217 code as an exact major-unit amount."""
    if currency in _STRIPE_EXPONENTS:
        return from_minor_units(minor, _STRIPE_EXPONENTS[currency])
    return from_minor_units(minor, exponent(currency))


def _intent(status: PaymentStatus) -> Callable[[_Object], list[DomainEvent]]:
    def interpret_intent(obj: _Object) -> list[DomainEvent]:
        currency = obj.currency()
        received = obj.fields.get("amount_received")
        # what was captured, once it is known; until then what is asked for
        captured = status == "succeeded" and isinstance(received, int) and received > 0
        return [PaymentReported(
            transaction_id=obj.payment_id(),
            status=status,
            amount=obj.amount("amount_received" if captured else "amount", currency),
            currency=currency,
            booking_reference=booking_reference(obj.fields),
            provider_reference=_id_of(obj.fields.get("latest_charge")),
            failure_reason=obj.failure_reason() if status == "failed" else None,
            occurred_at=obj.occurred_at,
        )]
    return interpret_intent


def _session(status: PaymentStatus | None) -> Callable[[_Object], list[DomainEvent]]:
    def interpret_session(obj: _Object) -> list[DomainEvent]:
        reached = status or _SESSION_PAYMENT.get(str(obj.fields.get("payment_status")))
        if reached is None or obj.fields.get("mode") not in (None, "payment"):
            return []  # nothing to pay, or a subscription or setup: not a one-off payment
        amount, currency = None, None
        if obj.fields.get("amount_total") is not None:
            currency = obj.currency()
            amount = obj.amount("amount_total", currency)
        return [PaymentReported(
            transaction_id=obj.payment_id(),
            status=reached,
            amount=amount,
            currency=currency,
            booking_reference=booking_reference(obj.fields),
            occurred_at=obj.occurred_at,
        )]
    return interpret_session


def _refund(obj: _Object) -> list[DomainEvent]:
    currency = obj.currency()
    transaction_id = obj.payment_id()
    refunded = obj.amount("amount_refunded", currency)
    captured = obj.fields.get("amount_captured")
    field = "amount_captured" if isinstance(captured, int) and captured > 0 else "amount"
    # a refunded charge was captured: it tells the amount even before its intent's events
    return [
        PaymentReported(
            transaction_id=transaction_id,
            status="succeeded",
            amount=obj.amount(field, currency),
            currency=currency,
            booking_reference=booking_reference(obj.fields),
            provider_reference=_id_of(obj.fields.get("id")),
            occurred_at=obj.occurred_at,
        ),
        PaymentRefunded(transaction_id=transaction_id, amount_refunded=refunded,
                        currency=currency, occurred_at=obj.occurred_at),
    ]


def _dispute(obj: _Object) -> list[DomainEvent]:
    return [PaymentDisputed(transaction_id=obj.payment_id())]


_SESSION_PAYMENT: dict[str, PaymentStatus] = {"paid": "succeeded", "unpaid": "pending"}
_HANDLERS: dict[str, Callable[[_Object], list[DomainEvent]]] = {
    "payment_intent.processing": _intent("pending"),
    "payment_intent.succeeded": _intent("succeeded"),
    "payment_intent.payment_failed": _intent("failed"),
    "payment_intent.canceled": _intent("failed"),
    "checkout.session.completed": _session(None),
    "checkout.session.async_payment_succeeded": _session("succeeded"),
    "checkout.session.async_payment_failed": _session("failed"),
    "charge.refunded": _refund,
    "charge.dispute.created": _dispute,
}


def _occurred_at(event: Any, obj: dict[str, Any], envelope: Envelope) -> datetime:
    """When the payment object was created, else the event, else when it was received."""
    for created in (obj.get("created"), event.get("created")):
        if isinstance(created, int) and not isinstance(created, bool) and 0 < created < 2**40:
            return datetime.fromtimestamp(created, UTC)
    return envelope.received_at


def _id_of(value: Any) -> str | None:
    """An id given as a string, or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return text(value)
