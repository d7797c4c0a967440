"""The generic transaction webhook: a payment or transfer between two accounts."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from hookline.config import Settings, SettingsError
from hookline.domain.amounts import AmountInvalid, parse_amount
from hookline.domain.currencies import is_currency
from hookline.domain.events import DomainEvent, PaymentReported, Rejected
from hookline.log.envelope import Envelope, exact_json
from hookline.senders.base import (
    Delivery,
    Fields,
    Headers,
    PayloadInvalid,
    parse_json,
    require_object,
)
from hookline.senders.signatures import StandardWebhooksVerifier

NAME = "transactions"
INVALID = "transaction.invalid"
log = logging.getLogger(__name__)


class Amount(fields.Field[Decimal]):
    """An amount by the rules of hookline.domain.amounts, from a JSON number or string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        try:
            return parse_amount(value)
        except AmountInvalid as exc:
            raise ValidationError(f"Not a valid amount: {exc}.") from None


class Currency(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs)
        if not is_currency(code):
            raise ValidationError("Not an ISO 4217 currency code.")
        return code


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
        if self._verifier is None:
            data = load(body)
        else:
            message_id = self._verifier.verify(headers, body)
            try:
                data = load(body)
            except PayloadInvalid as invalid:
                return _recorded_invalid(body, message_id, invalid)
        status = data["status"]
        return Delivery(
            # a status update is a new fact; the same report repeated is a duplicate
            key=data["transaction_id"] if status is None else f"{data['transaction_id']}:{status}",
            type=f"transaction.{status or 'succeeded'}",
            subject=data["booking_reference"] or data["transaction_id"],
            trusted=self._verifier is not None,  # unsigned: kept, but confirms nothing
        )


def _recorded_invalid(body: bytes, message_id: str, invalid: PayloadInvalid) -> Delivery:
    """A signed sender retries a 4xx for days: keep what it sent, and reject it when projecting.

    Only a JSON object naming a valid transaction_id qualifies; the key is the sender's message
    id, so a corrected delivery of the same transaction is not taken for a duplicate.
    """
    if "transaction_id" in invalid.errors or not isinstance(parse_json(body), dict):
        raise invalid
    transaction_id = str(parse_json(body)["transaction_id"])
    return Delivery(key=f"invalid:{message_id}", type=INVALID, subject=transaction_id)


def ingress(settings: Settings) -> TransactionsIngress:
    return TransactionsIngress(settings)


def load(body: bytes) -> dict[str, Any]:
    """Parse and validate a body; PayloadInvalid with field errors when it is not one."""
    payload = require_object(parse_json(body))
    if isinstance(payload.get("amount"), float):  # re-read the literal exactly
        try:
            payload["amount"] = exact_json(body)["amount"]
        except RecursionError:
            raise PayloadInvalid("the body is nested too deeply") from None
    try:
        return dict(_SCHEMA.load(payload, unknown="include"))
    except ValidationError as exc:
        raise PayloadInvalid("the transaction is invalid", _field_errors(exc)) from None


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


def _field_errors(exc: ValidationError) -> dict[str, Any]:
    messages = exc.messages
    return dict(messages) if isinstance(messages, dict) else {"_schema": messages}
