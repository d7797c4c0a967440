"""Chapa: a signature over the body, deliveries keyed by a hash of what identifies them (Chapa
sends no event id), one transaction per `tx_ref`, amounts as decimal strings in major units."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from hookline.config import Settings
from hookline.domain.amounts import AmountInvalid, parse_amount
from hookline.domain.currencies import exponent, is_currency
from hookline.domain.events import DomainEvent, PaymentRefunded, PaymentReported, Rejected
from hookline.log.envelope import Envelope
from hookline.senders.base import REQUIRED, Delivery, Headers, PayloadInvalid, parse_object, text
from hookline.senders.signatures import ChapaVerifier

NAME = "chapa"
log = logging.getLogger(__name__)
_REFUNDS = frozenset({"charge.refunded", "charge.reversed"})
_MAX_META = 4096  # a `meta` string longer than this is not read for a reference


class ChapaIngress:
    def __init__(self, verifier: ChapaVerifier) -> None:
        self._verifier = verifier

    def accept(self, headers: Headers, body: bytes) -> Delivery:
        trusted = self._verifier.verify(headers, body)
        payload = parse_object(body)
        kind = text(payload.get("event"))
        tx_ref, reference = text(payload.get("tx_ref")), text(payload.get("reference"))
        if kind is None:
            raise PayloadInvalid("the delivery has no event", {"event": REQUIRED})
        if tx_ref is None and reference is None:
            raise PayloadInvalid("the delivery has neither tx_ref nor reference",
                                 {"tx_ref": REQUIRED, "reference": REQUIRED})
        subject = booking_reference(payload) or tx_ref or reference
        assert subject is not None  # one of tx_ref and reference is there, checked above
        return Delivery(key=delivery_key(payload), type=kind, subject=subject, trusted=trusted)


def ingress(settings: Settings) -> ChapaIngress | None:
    if not settings.chapa_secrets:
        log.warning("HOOKLINE_CHAPA_SECRETS is not set: POST /v1/webhooks/chapa answers 404")
        return None
    if settings.chapa_secret_only_signatures:
        log.warning("HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES=allow: Chapa deliveries signed only "
                    "over the secret are accepted, recorded as untrusted")
    return ChapaIngress(ChapaVerifier(settings.chapa_secrets,
                                      settings.chapa_secret_only_signatures))


def delivery_key(payload: dict[str, Any]) -> str:
    """SHA-256 over tx_ref, reference, event and status: Chapa's retries hash the same. A
    charge may be refunded more than once: a refund's amount and time tell two apart."""
    names = ["tx_ref", "reference", "event", "status"]
    if payload.get("event") in _REFUNDS:
        names += ["amount", "updated_at"]
    identity = [payload.get(name) for name in names]
    return hashlib.sha256(orjson.dumps(identity)).hexdigest()


def booking_reference(payload: dict[str, Any]) -> str | None:
    """`meta.booking_reference` only, `meta` being an object or (as Chapa's checkout sends it)
    a JSON string holding one; never guessed from another field."""
    meta = payload.get("meta")
    if isinstance(meta, str) and len(meta) <= _MAX_META:
        try:
            meta = orjson.loads(meta)
        except orjson.JSONDecodeError:
            return None
    return text(meta.get("booking_reference")) if isinstance(meta, dict) else None


def interpret(envelope: Envelope) -> list[DomainEvent]:
    kind = envelope.type
    if kind not in ("charge.success", "charge.failed/cancelled") and kind not in _REFUNDS:
        return []  # payouts and anything else Chapa adds
    try:
        payload = envelope.exact_payload()
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"{kind} cannot be read: {exc}") from None
    if not isinstance(payload, dict):
        raise Rejected(f"{kind} needs a JSON object")
    tx_ref = text(payload.get("tx_ref"))
    if tx_ref is None:
        raise Rejected(f"{kind} needs tx_ref")
    currency = _currency(payload, kind)
    amount = _amount(payload, currency, kind)
    occurred_at = _created_at(payload) or envelope.received_at
    refund = kind in _REFUNDS
    # a refunded charge had succeeded; its refund amount is what was refunded, not charged
    reported = PaymentReported(
        transaction_id=tx_ref,
        status="failed" if kind == "charge.failed/cancelled" else "succeeded",
        amount=None if refund else amount,
        currency=currency,
        booking_reference=booking_reference(payload),
        provider_reference=text(payload.get("reference")),
        occurred_at=occurred_at,
    )
    if not refund:
        return [reported]
    # each refund event states what that refund returned, not a running total (see docs)
    return [reported, PaymentRefunded(transaction_id=tx_ref, amount_refunded=amount,
                                      currency=currency, occurred_at=occurred_at,
                                      running_total=False)]


def _currency(payload: dict[str, Any], kind: str) -> str:
    code = payload.get("currency")
    if not isinstance(code, str) or not code.isascii() or not is_currency(code.upper()):
        raise Rejected(f"{kind} needs currency as an ISO 4217 code")
    return code.upper()


def _amount(payload: dict[str, Any], currency: str, kind: str) -> Decimal:
    try:
        return parse_amount(payload.get("amount"), exponent(currency))
    except AmountInvalid as exc:
        raise Rejected(f"{kind} needs amount as a decimal string: it {exc}") from None


def _created_at(payload: dict[str, Any]) -> datetime | None:
    created = text(payload.get("created_at"))
    try:
        parsed = datetime.fromisoformat(created) if created else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None
