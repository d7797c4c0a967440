"""The generic transaction webhook: a payment or transfer between two accounts."""

from __future__ import annotations

import logging
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from hookline.config import Settings, SettingsError
from hookline.domain.events import DomainEvent, PaymentReported, Rejected
from hookline.log.envelope import Envelope
from hookline.senders.base import (
    Delivery,
    Fields,
    Headers,
    PayloadInvalid,
    exact_numbers,
    parse_object,
)
from hookline.senders.schemas import Amount, Currency, validated
from hookline.senders.signatures import StandardWebhooksVerifier

NAME = "transactions"
INVALID = "transaction.invalid"
log = logging.getLogger(__name__)


_id = validate.Length(min=1, max=128)
_STATUSES = frozenset({"pending", "succeeded", "failed"})


def _key_bytes(value: str) -> None:
    # the key ends up in the record's message_id, an AMQP short string (255 bytes at most)
    if len(value.encode()) > 128:
        raise ValidationError("Longer than 128 bytes in UTF-8.")


class TransactionSchema(Schema):
    transaction_id = fields.String(required=True, validate=[_id, _key_bytes])
    source_account = fields.String(required=True, validate=_id)
    destination_account = fields.String(required=True, validate=_id)
    amount = Amount(required=True)
    currency = Currency(required=True)
    booking_reference = fields.String(load_default=None, allow_none=True, validate=_id)
    status = fields.String(load_default=None, allow_none=True,
                           validate=validate.OneOf(sorted(_STATUSES)))
    failure_reason = fields.String(load_default=None, allow_none=True,
                                   validate=validate.Length(max=1000))


_SCHEMA = TransactionSchema()


class TransactionsIngress:
    def __init__(self, settings: Settings) -> None:
        secrets, public_keys = settings.transactions_secrets, settings.transactions_public_keys
        try:
            self._verifier = (StandardWebhooksVerifier(secrets, public_keys=public_keys)
                              if secrets or public_keys else None)
        except ValueError as exc:  # the message says which secret or key, never its value
            name = "SECRETS" if "secret" in str(exc) else "PUBLIC_KEYS"
            raise SettingsError(f"HOOKLINE_TRANSACTIONS_{name}: {exc}") from None
        if self._verifier is None and not settings.transactions_unsigned:
            raise SettingsError("HOOKLINE_TRANSACTIONS_SECRETS is not set: set it (or "
                                "HOOKLINE_TRANSACTIONS_PUBLIC_KEYS), or set "
                                "HOOKLINE_TRANSACTIONS_UNSIGNED=allow to accept unsigned "
                                "transactions that never confirm a booking (development)")
        if self._verifier is None:
            log.warning("HOOKLINE_TRANSACTIONS_UNSIGNED=allow: transaction webhooks are "
                        "accepted unsigned, as untrusted reports")

    def accept(self, headers: Headers, body: bytes) -> Delivery:
        message_id = None if self._verifier is None else self._verifier.verify(headers, body)
        payload = parse_object(body)
        try:
            data = _validated(payload, body)
        except PayloadInvalid as invalid:
            if message_id is None:
                raise
            return _recorded_invalid(payload, message_id, invalid)
        status = data["status"]
        return Delivery(
            # a status update is a new fact; the same report repeated is a duplicate
            key=data["transaction_id"] if status is None else f"{data['transaction_id']}:{status}",
            type=f"transaction.{status or 'succeeded'}",
            subject=data["booking_reference"] or data["transaction_id"],
            trusted=self._verifier is not None,  # unsigned: kept, but confirms nothing
        )


def _recorded_invalid(payload: dict[str, Any], message_id: str,
                      invalid: PayloadInvalid) -> Delivery:
    """A signed sender retries a 4xx for days: keep what it sent, and reject it when projecting.

    Only a JSON object naming a valid transaction_id qualifies; the key is the sender's message
    id, so a corrected delivery of the same transaction is not taken for a duplicate.
    """
    if "transaction_id" in invalid.errors:
        raise invalid
    transaction_id = str(payload["transaction_id"])
    return Delivery(key=f"invalid:{message_id}", type=INVALID, subject=transaction_id)


def ingress(settings: Settings) -> TransactionsIngress:
    return TransactionsIngress(settings)


def load(body: bytes) -> dict[str, Any]:
    """Parse and validate a body; PayloadInvalid with field errors when it is not one."""
    return _validated(parse_object(body), body)


def _validated(payload: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The parsed body validated, its amount exact; PayloadInvalid with field errors if not."""
    payload = exact_numbers(body, payload, [payload.get("amount")])
    return validated(_SCHEMA, payload, "the transaction is invalid")


def interpret(envelope: Envelope) -> list[DomainEvent]:
    if envelope.type == INVALID:
        try:
            load(envelope.raw_payload)
        except PayloadInvalid as invalid:
            raise Rejected(f"invalid transaction: {dict(invalid.errors)}") from None
    try:
        data = Fields(envelope.exact_payload(), "transaction")
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"not a valid transaction: {exc}") from None
    status = data.optional_text("status") or "succeeded"
    if status not in _STATUSES:
        raise Rejected(f"transaction.status: {status!r} is not one of {sorted(_STATUSES)}")
    return [PaymentReported(
        transaction_id=data.text("transaction_id"),
        status=status,  # type: ignore[arg-type]
        amount=data.amount("amount"),
        currency=data.text("currency"),
        booking_reference=data.optional_text("booking_reference"),
        source_account=data.text("source_account"),
        destination_account=data.text("destination_account"),
        failure_reason=data.optional_text("failure_reason"),
        occurred_at=envelope.received_at,
    )]
