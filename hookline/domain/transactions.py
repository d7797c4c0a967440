"""Transaction state rules: a join-semilattice, so arrival order and repeats do not matter.

A row is one payment of one source: (source, transaction_id). Status only climbs pending <
timed_out < failed < succeeded, and refunds lift a succeeded payment to partially_refunded or
refunded by amount. Each report is a whole fact: one whose amount, currency, accounts or
booking reference differ from what is known is refused as a conflict, never merged field by
field; only the amount a success reports (what was captured) supersedes an amount a pending
or failed report asked for, in either order. The provider reference, where reports disagree,
keeps the smaller value (a tie-break that does not depend on order). A running total of
refunds keeps the largest reported; refunds reported one by one add up; neither exceeds the
amount. created_at is the earliest time known; a dispute flag, once raised, stays; the
failure reason is that of a payment still failed. A row made only from unverified reports is
untrusted; a verified report replaces it, and an unverified report never changes a trusted row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from hookline.domain.events import (
    PaymentDisputed,
    PaymentEvent,
    PaymentRefunded,
    PaymentReported,
    PaymentTimedOut,
)

RANK = {"pending": 0, "timed_out": 1, "failed": 2, "succeeded": 3}
REFUNDED = frozenset({"refunded", "partially_refunded"})
Joinable = TypeVar("Joinable", str, Decimal)


# not frozen: a frozen dataclass pays a Python call per field on every copy, and the projector
# makes several per record (a tenth of its time); never changed in place, only replace()d
@dataclass(slots=True)
class TransactionState:
    transaction_id: str
    source: str
    status: str
    created_at: datetime
    processed_at: datetime
    updated_at: datetime
    last_offset: int
    booking_reference: str | None = None
    source_account: str | None = None
    destination_account: str | None = None
    provider_reference: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    failure_reason: str | None = None
    refunded_amount: Decimal = Decimal(0)
    disputed: bool = False
    trusted: bool = True


class Refused(Exception):
    """The report does not change the row: projected with `outcome` and the reason."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


UNTRUSTED = "untrusted report for a verified payment"
# each report states these as a whole: one that differs is a conflict, not a correction
_WHOLE = ("amount", "currency", "source_account", "destination_account", "booking_reference")
_WHOLE_BUT_AMOUNT = tuple(name for name in _WHOLE if name != "amount")
_SHOWN = frozenset({"amount", "currency"})  # the others may be personal: named, not shown


def settled_status(state: TransactionState) -> str:
    """The status before refunds: a refunded payment had succeeded."""
    return "succeeded" if state.status in REFUNDED else state.status


def apply(state: TransactionState | None, event: PaymentEvent, source: str, offset: int,
          at: datetime, trusted: bool = True) -> TransactionState | None:
    """The state after `event`, or None when the event changes nothing; Refused when the
    report is not taken (a conflict, or an unverified report about a verified payment)."""
    if isinstance(event, PaymentTimedOut) and (state is None or not state.trusted):
        return None  # hookline waits only on verified payments (the scheduler reads trusted)
    if state is not None and state.trusted != trusted:
        if not trusted:
            raise Refused("ignored", UNTRUSTED)
        state = None  # a verified report: what only unverified ones said is set aside
    if state is None:
        state = TransactionState(event.transaction_id, source, "pending", at, at, at, offset,
                                 trusted=trusted)
        base = None
    else:
        base = state
    changes = _merge(state, event)
    if base is not None and all(getattr(base, k) == v for k, v in changes.items()):
        return None
    status_changed = base is None or changes.get("status", state.status) != state.status
    changes.update(updated_at=at, last_offset=offset)
    if status_changed:
        changes["processed_at"] = at
    return replace(state, **changes)  # one copy per event: this runs for every record


def _merge(state: TransactionState, event: PaymentEvent) -> dict[str, Any]:
    """The fields the event changes, as a mapping."""
    match event:
        case PaymentReported():
            settles = _settles_amount(state, event)
            _refuse_conflict(state, event, _WHOLE if settles is None else _WHOLE_BUT_AMOUNT)
            reason = event.failure_reason if event.status == "failed" else None
            filled = _fill(state, event)
            if settles is not None:
                filled["amount"] = settles
            return filled | _settle(state, filled, event.status, reason)
        case PaymentRefunded():
            _refuse_conflict(state, event, ("currency",))
            total = event.amount_refunded if event.running_total else (
                state.refunded_amount + event.amount_refunded)
            refunded = {
                "currency": join(state.currency, event.currency),
                "created_at": _earliest(state.created_at, event.occurred_at),
                "refunded_amount": max(state.refunded_amount, total),
            }
            return refunded | _settle(state, refunded, "succeeded", None)
        case PaymentTimedOut():
            return _settle(state, {}, "timed_out", None)
        case PaymentDisputed():
            return {"disputed": True}


def _settles_amount(state: TransactionState, event: PaymentReported) -> Decimal | None:
    """The amount a success settles on where it differs from an amount only asked for: the
    captured amount of a success supersedes that of a pending or failed report (a partial
    capture, an amount changed before confirmation), whichever arrives first. None when the
    amounts are to be compared as whole facts."""
    if state.amount is None or event.amount is None or state.amount == event.amount:
        return None
    known_settled = settled_status(state) == "succeeded"
    if (event.status == "succeeded") == known_settled:
        return None  # both asked for, or both settled: a conflict if they differ
    return event.amount if event.status == "succeeded" else state.amount


def _refuse_conflict(state: TransactionState, event: PaymentEvent,
                     names: tuple[str, ...]) -> None:
    for name in names:
        known, incoming = getattr(state, name), getattr(event, name)
        if known is not None and incoming is not None and known != incoming:
            shown = f" {incoming} where {known} is known" if name in _SHOWN else ""
            raise Refused("rejected", f"conflict: the report's {name} differs{shown}")


def _fill(state: TransactionState, event: PaymentReported) -> dict[str, Any]:
    return {
        "booking_reference": join(state.booking_reference, event.booking_reference),
        "source_account": join(state.source_account, event.source_account),
        "destination_account": join(state.destination_account, event.destination_account),
        "provider_reference": join(state.provider_reference, event.provider_reference),
        "amount": join(state.amount, event.amount),
        "currency": join(state.currency, event.currency),
        "created_at": _earliest(state.created_at, event.occurred_at),
    }


def _settle(state: TransactionState, changes: dict[str, Any], incoming: str,
            reason: str | None) -> dict[str, Any]:
    amount = changes.get("amount", state.amount)
    refunded = changes.get("refunded_amount", state.refunded_amount)
    settled = max(settled_status(state), incoming, key=RANK.__getitem__)
    if amount is not None:
        # exact whatever the order: the amount, once known, never changes (a conflict)
        refunded = min(refunded, amount)
    status = _refund_status(settled, refunded, amount)
    # a payment that succeeded after failing has no failure reason (the trail keeps it)
    failure = join(state.failure_reason, reason) if status == "failed" else None
    return {"status": status, "refunded_amount": refunded, "failure_reason": failure}


def _refund_status(settled: str, refunded: Decimal, amount: Decimal | None) -> str:
    if settled != "succeeded" or refunded <= 0:
        return settled
    if amount is not None and refunded < amount:
        return "partially_refunded"
    return "refunded"


def join(known: Joinable | None, incoming: Joinable | None) -> Joinable | None:
    """The value known once either is, the smaller one when both are: order does not matter."""
    if known is None:
        return incoming
    if incoming is None:
        return known
    return min(known, incoming)


def _earliest(known: datetime, incoming: datetime | None) -> datetime:
    return known if incoming is None else min(known, incoming)
