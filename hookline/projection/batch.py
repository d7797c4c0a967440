"""Projecting one batch of records into PostgreSQL in one transaction, checkpoint included."""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql

from hookline.db import checkpoints, events, outbox, transactions
from hookline.db.bookings import project_bookings
from hookline.db.locks import Row, lock_rows
from hookline.db.rejections import rejections_lock
from hookline.db.transactions import TxKey
from hookline.domain import transactions as payments
from hookline.domain.bookings import PaymentChange
from hookline.domain.events import DomainEvent, PaymentEvent, PaymentTimedOut, Rejected
from hookline.domain.transactions import Refused, TransactionState
from hookline.log.envelope import Envelope, decode
from hookline.log.reader import Record
from hookline.mail.outbox import compose
from hookline.senders.base import Interpreter

log = logging.getLogger(__name__)


class CheckpointMoved(Exception):
    """Another projector advanced the checkpoint: this one must stop."""


# not frozen, for the projector's speed (see TransactionState); never changed once made
@dataclass(slots=True)
class _Row:
    offset: int
    envelope: Envelope | None
    outcome: str
    error: str | None = None
    keep_payload: bool = True  # False when the payload itself is what PostgreSQL refused


def load_checkpoint(conn: psycopg.Connection[Any], consumer: str) -> int:
    """The committed checkpoint (-1 before the first commit); ends the read's transaction."""
    checkpoint = checkpoints.load(conn, consumer)
    conn.commit()
    return checkpoint


@dataclass(frozen=True, slots=True)
class Partition:
    """Which partition a batch comes from, and whether others are projected at the same time
    (then rows two partitions may both change are locked before they are read)."""
    index: int = 0
    shared: bool = False
    # the operators' rejections to obey; a rebuild, working in a schema of its own, names the
    # live table
    rejections: tuple[str, ...] = ("operator_rejections",)


# what makes the projector wait and retry the batch: never a record's fault
INFRASTRUCTURE = (psycopg.OperationalError, psycopg.InterfaceError, CheckpointMoved)


def project_batch(conn: psycopg.Connection[Any], consumer: str, records: Sequence[Record],
                  expected: int, interpreters: Mapping[str, Interpreter],
                  booking_ttl: int = 15 * 60, partition: Partition = Partition()) -> Counter[str]:
    """Apply records in offset order and advance the checkpoint from `expected`; commit.

    A batch that fails on anything but the infrastructure is projected again in savepoints,
    halved until the record that fails is alone, and that record is `rejected` with its
    reason: whatever a record holds, the checkpoint moves past it."""
    now = datetime.now(UTC)
    step = _Step(interpreters, timedelta(seconds=booking_ttl), partition, now)
    try:
        with conn.transaction():
            rejections = _begin(conn, consumer, records, partition)
            rows = _project(conn, records, rejections, step)
            _advance(conn, consumer, expected, records[-1].offset)
        return Counter(row.outcome for row in rows)
    except INFRASTRUCTURE:
        raise
    except Exception as exc:  # a record's doing, or a bug: find which record, keep moving
        log.warning("%s: batch of offsets %d-%d of partition %d failed (%s): projecting it "
                    "again in parts, to reject the failing record", consumer, records[0].offset,
                    records[-1].offset, partition.index, failure_kind(exc))
    with conn.transaction():
        rejections = _begin(conn, consumer, records, partition)
        if checkpoints.load(conn, consumer) != expected:
            raise CheckpointMoved(f"checkpoint of {consumer!r} is no longer {expected}")
        outcomes = _project_isolating(conn, records, rejections, step)
        _advance(conn, consumer, expected, records[-1].offset)
    return outcomes


def reproject(conn: psycopg.Connection[Any], records: Sequence[Record],
              interpreters: Mapping[str, Interpreter], booking_ttl: int, partition: Partition,
              now: datetime) -> Counter[str]:
    """Project again, in the caller's transaction, records whose events rows the caller has
    just deleted: as the projector would, a failing record `rejected` alone, but with no
    checkpoint and no operator's rejection (the operator chose these records)."""
    step = _Step(interpreters, timedelta(seconds=booking_ttl), partition, now)
    return _project_isolating(conn, records, {}, step)


@dataclass(frozen=True, slots=True)
class _Step:
    """What projecting a batch needs besides the records."""
    interpreters: Mapping[str, Interpreter]
    booking_ttl: timedelta
    partition: Partition
    now: datetime


def _begin(conn: psycopg.Connection[Any], consumer: str, records: Sequence[Record],
           partition: Partition) -> dict[int, str]:
    """Tune the transaction, take the rejections lock, and read the batch's rejections."""
    # every read here is a key lookup; during a fast replay the tables grow faster than
    # autovacuum re-analyses them, and stale statistics would pick whole-table scans.
    # JIT would compile each small statement (tens of ms) once costs look that high.
    conn.execute("SELECT set_config('enable_seqscan', 'off', true), "
                 "set_config('jit', 'off', true), pg_advisory_xact_lock(%s)",
                 (rejections_lock(consumer),))
    cursor = conn.execute(sql.SQL(
        'SELECT "offset", reason FROM {} WHERE "partition" = %s AND "offset" BETWEEN %s AND %s'
    ).format(sql.Identifier(*partition.rejections)),
        (partition.index, records[0].offset, records[-1].offset))
    return {int(offset): reason for offset, reason in cursor}


def _project(conn: psycopg.Connection[Any], records: Sequence[Record],
             rejections: Mapping[int, str], step: _Step) -> list[_Row]:
    """Write what the records mean and their events rows; no checkpoint, no commit."""
    partition = step.partition
    envelopes = [_decode(record) for record in records]
    seen = events.already_projected(conn, [e.id for _, e in envelopes if e is not None])
    rows, effects = _interpret(envelopes, seen, step.interpreters, rejections)
    locked = lock_rows(conn, _named_rows(effects), set()) if partition.shared else set()
    untrusted = {row.offset for row in rows if row.envelope and not row.envelope.trusted}
    changes, refused = _apply_transactions(conn, effects, untrusted, step.now)
    for row in rows:  # a report the state rules did not take, and why
        if row.offset in refused:
            row.outcome, row.error = refused[row.offset].outcome, str(refused[row.offset])
    if partition.shared:  # bookings their stored payments name, known only now
        lock_rows(conn, {("booking", c.after.booking_reference) for c in changes
                         if c.after.booking_reference}, locked)
    read = {row.offset: row.envelope for row in rows if row.envelope is not None}
    notices = project_bookings(conn, effects, changes, read, step.now, step.booking_ttl)
    outbox.enqueue(conn, [compose(n, read[n.offset].id) for n in notices], step.now)
    _insert_events(conn, rows, step.now, partition.index)
    return rows


def _project_isolating(conn: psycopg.Connection[Any], records: Sequence[Record],
                       rejections: Mapping[int, str], step: _Step) -> Counter[str]:
    """Project records in a savepoint; if that fails, each half the same way, down to the one
    record that fails, which is `rejected` with the reason (the same result as one record at a
    time, found in a few attempts instead of one per record)."""
    try:
        with conn.transaction():
            return Counter(row.outcome for row in _project(conn, records, rejections, step))
    except INFRASTRUCTURE:
        raise
    except Exception as exc:
        if len(records) > 1:
            half = len(records) // 2
            return (_project_isolating(conn, records[:half], rejections, step)
                    + _project_isolating(conn, records[half:], rejections, step))
        failure = exc
    log.warning("offset %d of partition %d rejected: projecting it failed (%s)",
                records[0].offset, step.partition.index, failure_kind(failure))
    _write_rejected(conn, records[0], _reason(failure), step)
    return Counter(rejected=1)


def _write_rejected(conn: psycopg.Connection[Any], record: Record, reason: str,
                    step: _Step) -> None:
    """The record's events row, `rejected`: without its payload if the payload cannot be
    stored, as an unreadable record if even its header cannot; the log keeps it whole."""
    offset, envelope = _decode(record)
    attempts = [_Row(offset, envelope, "rejected", reason)]
    if envelope is not None:  # then without the payload, then as a record not understood
        attempts += [
            _Row(offset, envelope, "rejected", f"{reason}; the payload could not be stored "
                 "(the log keeps the record)", keep_payload=False),
            _Row(offset, None, "rejected", f"{reason}; its header could not be stored either "
                 "(the log keeps the record)")]
    for row in attempts:
        try:
            with conn.transaction():
                _insert_events(conn, [row], step.now, step.partition.index)
            return
        except INFRASTRUCTURE:
            raise
        except psycopg.Error as exc:
            if row is attempts[-1]:
                raise
            log.warning("offset %d of partition %d: its events row cannot be stored (%s)",
                        offset, step.partition.index, failure_kind(exc))


def failure_kind(exc: BaseException) -> str:
    """An exception as a log line may show it: its class and SQLSTATE, never its message
    (PostgreSQL's quotes the data, a Python one may too)."""
    sqlstate = exc.diag.sqlstate if isinstance(exc, psycopg.Error) else None
    if sqlstate:
        return f"SQLSTATE {sqlstate} {type(exc).__name__}"
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    return type(exc).__name__ + "".join(f" at {f.filename}:{f.lineno}" for f in where)


def _reason(exc: BaseException) -> str:
    """Why a record was rejected, for events.error: PostgreSQL's primary message, which holds
    no data (unlike its detail and context), or the exception's own."""
    if isinstance(exc, psycopg.Error) and exc.diag.sqlstate:
        return f"projection failed: SQLSTATE {exc.diag.sqlstate}: {exc.diag.message_primary}"
    return f"projection failed: {type(exc).__name__}: {exc}"[:1000]


def _decode(record: Record) -> tuple[int, Envelope | None]:
    try:
        return record.offset, decode(record.body)
    except ValueError:
        return record.offset, None


def _interpret(envelopes: Iterable[tuple[int, Envelope | None]], seen: set[str],
               interpreters: Mapping[str, Interpreter], rejections: Mapping[int, str],
               ) -> tuple[list[_Row], list[tuple[int, str, DomainEvent]]]:
    rows: list[_Row] = []
    effects: list[tuple[int, str, DomainEvent]] = []
    for offset, envelope in envelopes:
        refused = rejections.get(offset)
        refusal = None if refused is None else f"rejected by an operator: {refused}"
        if envelope is None:
            rows.append(_Row(offset, None, "rejected", refusal or "the record is not an envelope"))
            continue
        if envelope.id in seen:
            rows.append(_Row(offset, envelope, "duplicate", refusal))
            continue
        seen.add(envelope.id)
        if refusal is not None:  # never interpreted: that may be what the operator avoids
            rows.append(_Row(offset, envelope, "rejected", refusal))
            continue
        try:
            meant = _events_of(envelope, interpreters)
        except Rejected as exc:
            rows.append(_Row(offset, envelope, "rejected", str(exc)))
            continue
        rows.append(_Row(offset, envelope, "applied" if meant else "ignored"))
        effects.extend((offset, envelope.source, event) for event in meant)
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
        log.error("cannot interpret id=%s source=%s: %s", envelope.id, envelope.source,
                  failure_kind(exc))  # the message may quote the payload: events.error has it
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
    states = transactions.with_ids(conn, {e.transaction_id for _, _, e in payment_effects})
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
                    new = payments.apply(before, event, key[1], offset, now,
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
    transactions.upsert(conn, changed.values())
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


def _insert_events(conn: psycopg.Connection[Any], rows: list[_Row], now: datetime,
                   partition: int) -> None:
    events.insert(conn, (_event_row(row, now, partition) for row in rows))


def _event_row(row: _Row, now: datetime, partition: int) -> tuple[Any, ...]:
    envelope = row.envelope
    if envelope is None:
        where = f"{partition}:{row.offset}" if partition else str(row.offset)
        return (row.offset, partition, f"unreadable:{where}", "unknown", "unknown", "", now, now,
                row.outcome, row.error, None)
    return (row.offset, partition, envelope.id, envelope.source, envelope.type,
            envelope.subject, envelope.received_at, now, row.outcome, row.error,
            envelope.raw_payload.decode() if row.keep_payload else None)


def _advance(conn: psycopg.Connection[Any], consumer: str, expected: int, last: int) -> None:
    if not checkpoints.advance(conn, consumer, expected, last):
        raise CheckpointMoved(f"checkpoint of {consumer!r} is no longer {expected}")
