"""The bookings a batch touches: loaded with their payments in bulk, advanced, written back.

A few statements per batch, never one per record: the bookings whose reference any booking
event or changed transaction names, every transaction with those references, one upsert. The
notices (emails owed) are returned, for the caller to enqueue in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

import psycopg
from psycopg import sql

from hookline.db import bulk, transactions
from hookline.domain.bookings import BookingState, Ledger, Notice, PaymentChange, payment_key
from hookline.domain.events import BookingEvent, DomainEvent
from hookline.domain.transactions import TransactionState
from hookline.log.envelope import Envelope

_COLUMNS = [f.name for f in fields(BookingState)]
_ROW = attrgetter(*_COLUMNS)
_BOOKING_LIST = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
_SELECT_BOOKINGS = sql.SQL("SELECT {} FROM bookings WHERE reference = ANY(%s)").format(
    _BOOKING_LIST)


def project_bookings(conn: psycopg.Connection[Any], effects: Sequence[tuple[int, str, DomainEvent]],
                     changes: Sequence[PaymentChange], envelopes: Mapping[int, Envelope],
                     now: datetime, ttl: timedelta) -> list[Notice]:
    """Apply the batch's booking events and payment changes in log order; the notices they
    call for, in that order."""
    events = [(o, e) for o, _, e in effects if isinstance(e, BookingEvent)]
    named = {e.reference for _, e in events}
    paid = {c.after.booking_reference for c in changes if c.after.booking_reference}
    if not named and not paid:
        return []
    bookings = with_references(conn, named | paid)
    involved = named | bookings.keys()
    if not involved:  # payments for bookings not created yet: joined when they are
        return []
    ledger = Ledger(bookings, _load_payments(conn, involved, changes), ttl, now)
    notices: list[Notice] = []
    steps = sorted([*events, *((c.offset, c) for c in changes)], key=lambda step: step[0])
    for offset, step in steps:
        at = envelopes[offset].received_at
        if isinstance(step, PaymentChange):
            notices += ledger.on_payment(step, at)
        else:
            notices += ledger.on_booking(step, offset, at)
    if ledger.changed:
        bulk.upsert(conn, "bookings", _COLUMNS, ["reference"], map(_ROW, ledger.changed.values()))
    return notices


def with_references(conn: psycopg.Connection[Any],
                    references: Iterable[str]) -> dict[str, BookingState]:
    cursor = conn.execute(_SELECT_BOOKINGS, (list(references),))
    return {row[0]: BookingState(*row) for row in cursor}


def _load_payments(conn: psycopg.Connection[Any], references: set[str],
                   changes: Sequence[PaymentChange],
                   ) -> dict[str, dict[tuple[str, str], TransactionState]]:
    """Each booking's transactions as they were before this batch (the batch replays after)."""
    rewound: dict[tuple[str, str], TransactionState | None] = {}
    for change in changes:
        rewound.setdefault(payment_key(change.after), change.before)
    current = transactions.of_bookings(conn, references)
    earlier = [s for s in rewound.values() if s is not None]
    payments: dict[str, dict[tuple[str, str], TransactionState]] = {}
    for state in [*(s for s in current if payment_key(s) not in rewound), *earlier]:
        if state.booking_reference in references:
            payments.setdefault(state.booking_reference, {})[payment_key(state)] = state
    return payments


def expired(conn: psycopg.Connection[Any], limit: int) -> list[tuple[str, datetime]]:
    """Pending bookings past their expiry, oldest first: (reference, expires_at)."""
    return conn.execute(
        "SELECT reference, expires_at FROM bookings "
        "WHERE status = 'pending' AND expires_at <= now() ORDER BY expires_at LIMIT %s",
        (limit,)).fetchall()


def changed_at(conn: psycopg.Connection[Any], moment: datetime) -> dict[str, BookingState]:
    """The bookings a projection at `moment` changed (it sets updated_at to that moment)."""
    cursor = conn.execute(sql.SQL("SELECT {} FROM bookings WHERE updated_at = %s").format(
        _BOOKING_LIST), (moment,))
    return {row[0]: BookingState(*row) for row in cursor}
