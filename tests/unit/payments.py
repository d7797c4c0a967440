"""What the payment providers' tests share: a signed delivery, interpreted or rejected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from hookline.domain.events import DomainEvent, PaymentRefunded, PaymentReported, Rejected
from hookline.log.envelope import Envelope
from hookline.senders.base import Delivery

RECEIVED = datetime(2024, 5, 1, tzinfo=UTC)


def no_negative_amount_unless_rejected(interpret: Callable[[Envelope], list[DomainEvent]],
                                       source: str, delivery: Delivery, raw: bytes) -> None:
    """An accepted delivery's events carry no negative amount, or it is rejected."""
    envelope = Envelope(f"{source}:k", source, delivery.type, delivery.subject, RECEIVED, raw)
    try:
        events = interpret(envelope)
    except Rejected:
        return  # signed, recorded, and projected as rejected with this reason
    assert all(amount >= 0 for amount in amounts(events))


def amounts(events: list[DomainEvent]) -> list[Decimal]:
    found = [e.amount for e in events if isinstance(e, PaymentReported) and e.amount is not None]
    return found + [e.amount_refunded for e in events if isinstance(e, PaymentRefunded)]
