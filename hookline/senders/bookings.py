"""The booking application: bookings created and cancelled, signed with Standard Webhooks."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hookline.config import Settings, SettingsError
from hookline.domain.events import BookingCancelled, BookingCreated, DomainEvent, Rejected
from hookline.log.envelope import Envelope
from hookline.senders.base import Delivery, Fields, Headers, exact_numbers, parse_object
from hookline.senders.schemas import Amount, Currency, validated
from hookline.senders.signatures import StandardWebhooksVerifier

NAME = "bookings"
CREATED, CANCELLED = "booking.created", "booking.cancelled"
log = logging.getLogger(__name__)

_reference = validate.Length(min=1, max=128)


class CustomerSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class BookingCreatedSchema(Schema):
    reference = fields.String(required=True, validate=_reference)
    customer = fields.Nested(CustomerSchema, required=True)
    destination = fields.String(required=True, validate=validate.Length(min=1, max=200))
    travel_date = fields.Date(required=True)
    return_date = fields.Date(load_default=None, allow_none=True)
    travelers = fields.Integer(required=True, strict=True,
                               validate=validate.Range(min=1, max=1000))
    total_amount = Amount(required=True)
    currency = Currency(required=True)
    created_at = fields.AwareDateTime(required=True, default_timezone=UTC)

    @validates_schema(skip_on_field_errors=False)
    def _return_after_travel(self, data: dict[str, Any], **_kwargs: Any) -> None:
        back, out = data.get("return_date"), data.get("travel_date")
        if back is not None and out is not None and back < out:
            raise ValidationError("Must not be before the travel date.", "return_date")


class BookingCancelledSchema(Schema):
    reference = fields.String(required=True, validate=_reference)
    reason = fields.String(load_default=None, allow_none=True,
                           validate=validate.Length(max=1000))


class NotificationSchema(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    booking = fields.Dict(required=True)


_SCHEMAS: dict[str, Schema] = {CREATED: BookingCreatedSchema(),
                               CANCELLED: BookingCancelledSchema()}
_NOTIFICATION = NotificationSchema()


class BookingsIngress:
    def __init__(self, secrets: tuple[str, ...], public_keys: tuple[str, ...] = ()) -> None:
        self._verifier = StandardWebhooksVerifier(secrets, public_keys=public_keys)

    def accept(self, headers: Headers, body: bytes) -> Delivery:
        key = self._verifier.verify(headers, body)
        kind, booking = load(body)
        reference = booking.get("reference")
        # types we do not use are still recorded (projected as ignored), keyed as sent
        return Delivery(key=key, type=kind,
                        subject=reference if isinstance(reference, str) and reference else key)


def ingress(settings: Settings) -> BookingsIngress | None:
    """None (the endpoint answers 404) until a secret or a public key is set."""
    if not settings.bookings_secrets and not settings.bookings_public_keys:
        log.warning("neither HOOKLINE_BOOKINGS_SECRETS nor _PUBLIC_KEYS is set: "
                    "POST /v1/webhooks/bookings answers 404")
        return None
    try:
        return BookingsIngress(settings.bookings_secrets, settings.bookings_public_keys)
    except ValueError as exc:  # the message says which secret or key, never its value
        name = "SECRETS" if "secret" in str(exc) else "PUBLIC_KEYS"
        raise SettingsError(f"HOOKLINE_BOOKINGS_{name}: {exc}") from None


def load(body: bytes) -> tuple[str, dict[str, Any]]:
    """The type and the validated booking; PayloadInvalid with field errors otherwise."""
    payload = parse_object(body)
    booking = payload.get("booking")
    if isinstance(booking, dict):  # its amount and count must be read exactly
        payload = exact_numbers(body, payload, booking.values())
    outer = validated(_NOTIFICATION, payload, "the booking notification is invalid")
    schema = _SCHEMAS.get(outer["type"])
    if schema is None:
        return outer["type"], outer["booking"]
    return outer["type"], validated(schema, outer["booking"], "the booking is invalid",
                                    under="booking")


def interpret(envelope: Envelope) -> list[DomainEvent]:
    if envelope.type not in _SCHEMAS:
        return []
    try:
        booking = Fields(envelope.exact_payload(), "notification").nested("booking")
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"not a valid {envelope.type}: {exc}") from None
    if envelope.type == CANCELLED:
        return [BookingCancelled(reference=booking.text("reference"),
                                 reason=booking.optional_text("reason"))]
    customer = booking.nested("customer")
    return [BookingCreated(
        reference=booking.text("reference"),
        customer_email=customer.text("email"),
        customer_name=customer.text("name"),
        destination=booking.text("destination"),
        travel_date=booking.parsed("travel_date", date.fromisoformat),  # type: ignore[arg-type]
        return_date=booking.parsed("return_date", date.fromisoformat, optional=True),
        travelers=booking.integer("travelers", minimum=1),
        total_amount=booking.amount("total_amount"),
        currency=booking.text("currency"),
        created_at=booking.parsed("created_at", _aware),  # type: ignore[arg-type]
    )]


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
