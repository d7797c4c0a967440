"""Projecting one batch of records into PostgreSQL in one transaction, checkpoint included."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any

import psycopg

from eventlog.envelope import Envelope, decode
from eventlog.reader import Record
from ingest.sources.base import Interpreter
from projections import bulk, transactions
from projections.booking_store import project_bookings
from projections.bookings import PaymentChange
from projections.domain import DomainEvent, PaymentEvent, PaymentTimedOut, Rejected
from projections.locks import Row, lock_rows
from projections.transactions import Refused, TransactionState

log = logging.getLogger(__name__)

TxKey = tuple[str, str]  # a transaction row's key: (transaction_id, source)
_TX_COLUMNS = [f.name for f in fields(TransactionState)]
_TX_ROW = attrgetter(*_TX_COLUMNS)  # dataclasses.astuple deep-copies every value: far slower
_EVENT_COLUMNS = ("offset", "partition", "id", "source", "type", "subject", "received_at",
                  "projected_at", "outcome", "error", "payload")


class CheckpointMoved(Exception):
    """Another projector advanced the checkpoint: this one must stop."""


# not frozen, for the projector's speed (see TransactionState); never changed once made
@dataclass(slots=True)
class _Row:
    offset: int
    envelope: Envelope | None
    outcome: str
    error: str | None = None


def load_checkpoint(conn: psycopg.Connection[Any], consumer: str) -> int:
    row = conn.execute("SELECT last_offset FROM consumer_offsets WHERE consumer = %s",
                       (consumer,)).fetchone()
    conn.commit()
    return -1 if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class Partition:
    """Which partition a batch comes from, and whether others are projected at the same time
    (then rows two partitions may both change are locked before they are read)."""
    index: int = 0
    shared: bool = False


def project_batch(conn: psycopg.Connection[Any], consumer: str, records: Sequence[Record],
                  expected: int, interpreters: Mapping[str, Interpreter],
                  booking_ttl: int = 15 * 60, partition: Partition = Partition()) -> Counter[str]:
    """Apply records in offset order and advance the checkpoint from `expected`; commit."""
    now = datetime.now(UTC)
    with conn.transaction():
        # every read here is a key lookup; during a fast replay the tables grow faster than
        # autovacuum re-analyses them, and stale statistics would pick whole-table scans.
        # JIT would compile each small statement (tens of ms) once costs look that high.
        conn.execute("SELECT set_config('enable_seqscan', 'off', true), "
                     "set_config('jit', 'off', true)")
        envelopes = [_decode(record) for record in records]
        seen = _already_projected(conn, [e.id for _, e in envelopes if e is not None])
        rows, effects = _interpret(envelopes, seen, interpreters)
        locked = lock_rows(conn, _named_rows(effects), set()) if partition.shared else set()
        untrusted = {row.offset for row in rows if row.envelope and not row.envelope.trusted}
        changes, refused = _apply_transactions(conn, effects, untrusted, now)
        for row in rows:  # a report the state rules did not take, and why
            if row.offset in refused:
                row.outcome, row.error = refused[row.offset].outcome, str(refused[row.offset])
        if partition.shared:  # bookings their stored payments name, known only now
            lock_rows(conn, {("booking", c.after.booking_reference) for c in changes
                             if c.after.booking_reference}, locked)
        project_bookings(conn, effects, changes,
                         {row.offset: row.envelope for row in rows if row.envelope is not None},
                         now, timedelta(seconds=booking_ttl))
        _insert_events(conn, rows, now, partition.index)
        _advance(conn, consumer, expected, records[-1].offset)
    return Counter(row.outcome for row in rows)


def _decode(record: Record) -> tuple[int, Envelope | None]:
    try:
        return record.offset, decode(record.body)
    except ValueError:
        return record.offset, None


def _already_projected(conn: psycopg.Connection[Any], ids: list[str]) -> set[str]:
    cursor = conn.execute(
        "SELECT id FROM events WHERE id = ANY(%s) AND outcome <> 'duplicate'", (ids,))
    return {row[0] for row in cursor}


def _interpret(envelopes: Iterable[tuple[int, Envelope | None]], seen: set[str],
               interpreters: Mapping[str, Interpreter],
               ) -> tuple[list[_Row], list[tuple[int, str, DomainEvent]]]:
    rows: list[_Row] = []
    effects: list[tuple[int, str, DomainEvent]] = []
    for offset, envelope in envelopes:
        if envelope is None:
            rows.append(_Row(offset, None, "rejected", "the record is not an envelope"))
            continue
        if envelope.id in seen:
            rows.append(_Row(offset, envelope, "duplicate"))
            continue
        seen.add(envelope.id)
        try:
            events = _events_of(envelope, interpreters)
        except Rejected as exc:
            rows.append(_Row(offset, envelope, "rejected", str(exc)))
            continue
        rows.append(_Row(offset, envelope, "applied" if events else "ignored"))
        effects.extend((offset, envelope.source, event) for event in events)
    return rows, effects


def _events_of(envelope: Envelope, interpreters: Mapping[str, Interpreter]) -> list[DomainEvent]:
    interpret = interpreters.get(envelope.source)
    if interpret is None:
        raise Rejected(f"no source named {envelope.source!r}")
    try:
        return interpret(envelope)
    except Rejected:
        raise
    except Exception as exc:  # a mapping bug: record it, keep the log moving, fix and replay
        log.exception("cannot interpret id=%s source=%s", envelope.id, envelope.source)
        raise Rejected(f"interpretation failed: {type(exc).__name__}: {exc}") from exc


def _named_rows(effects: Iterable[tuple[int, str, DomainEvent]]) -> set[Row]:
    """The transactions and bookings a batch's events name."""
    named: set[Row] = set()
    for _, _, event in effects:
        if isinstance(event, PaymentEvent):  # every source's row with the id: one lock
            named.add(("transaction", event.transaction_id))
        if reference := getattr(event, "booking_reference", None) or getattr(
                event, "reference", None):
            named.add(("booking", reference))
    return named


def _apply_transactions(conn: psycopg.Connection[Any],
                        effects: list[tuple[int, str, DomainEvent]], untrusted: set[int],
                        now: datetime) -> tuple[list[PaymentChange], dict[int, Refused]]:
    """Apply each record's payment events to its rows, all of a record's or none; the changes
    in log order and the records refused, by offset."""
    payment_effects = [(o, s, e) for o, s, e in effects if isinstance(e, PaymentEvent)]
    if not payment_effects:
        return [], {}
    states = _load_transactions(conn, {e.transaction_id for _, _, e in payment_effects})
    changed: dict[TxKey, TransactionState] = {}
    timeline: list[PaymentChange] = []  # every step, for the bookings joined in log order
    refused: dict[int, Refused] = {}
    for offset, group in groupby(payment_effects, key=itemgetter(0)):
        trial: dict[TxKey, TransactionState] = {}  # this record's rows, kept if all are taken
        steps: list[PaymentChange] = []
        try:
            for _, source, event in group:
                for key in _rows_of(source, event, states, trial):
                    before = trial.get(key) or states.get(key)
                    new = transactions.apply(before, event, key[1], offset, now,
                                             offset not in untrusted)
                    if new is not None:
                        trial[key] = new
                        steps.append(PaymentChange(offset, before, new))
        except Refused as exc:
            refused[offset] = exc
            continue
        states.update(trial)
        changed.update(trial)
        timeline += steps
    bulk.upsert(conn, "transactions", _TX_COLUMNS, ["transaction_id", "source"],
                map(_TX_ROW, changed.values()))
    return timeline, refused


def _rows_of(source: str, event: PaymentEvent,
             *known: Mapping[TxKey, TransactionState]) -> list[TxKey]:
    """The rows an event is about: its own source's, or for a time-out the payment's source
    (every row with the id when a record written before sources were named says none)."""
    if not isinstance(event, PaymentTimedOut):
        return [(event.transaction_id, source)]
    if event.source is not None:
        return [(event.transaction_id, event.source)]
    return sorted({key for rows in known for key in rows if key[0] == event.transaction_id})


def _load_transactions(conn: psycopg.Connection[Any],
                       ids: set[str]) -> dict[TxKey, TransactionState]:
    """Every row with one of the ids, whatever its source: one key range each."""
    cursor = conn.execute(
        f"SELECT {', '.join(_TX_COLUMNS)} FROM transactions "
        "WHERE transaction_id = ANY(%s)",
        (list(ids),))
    return {(row[0], row[1]): TransactionState(*row) for row in cursor}


def _insert_events(conn: psycopg.Connection[Any], rows: list[_Row], now: datetime,
                   partition: int) -> None:
    columns = ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
    with conn.cursor() as cursor, cursor.copy(f"COPY events ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(_event_row(row, now, partition))


def _event_row(row: _Row, now: datetime, partition: int) -> tuple[Any, ...]:
    envelope = row.envelope
    if envelope is None:
        where = f"{partition}:{row.offset}" if partition else str(row.offset)
        return (row.offset, partition, f"unreadable:{where}", "unknown", "unknown", "", now, now,
                row.outcome, row.error, None)
    return (row.offset, partition, envelope.id, envelope.source, envelope.type,
            envelope.subject, envelope.received_at, now, row.outcome, row.error,
            envelope.raw_payload.decode())


def _advance(conn: psycopg.Connection[Any], consumer: str, expected: int, last: int) -> None:
    if expected < 0:
        cursor = conn.execute(
            "INSERT INTO consumer_offsets (consumer, last_offset) VALUES (%s, %s) "
            "ON CONFLICT (consumer) DO NOTHING", (consumer, last))
    else:
        cursor = conn.execute(
            "UPDATE consumer_offsets SET last_offset = %s "
            "WHERE consumer = %s AND last_offset = %s", (last, consumer, expected))
    if cursor.rowcount != 1:
        raise CheckpointMoved(f"checkpoint of {consumer!r} is no longer {expected}")
