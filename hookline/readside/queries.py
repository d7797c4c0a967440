"""Read-side queries for operators, over the projection tables.

Every list is read newest first by a key that is unique, and continues strictly
after the key of the last row a page showed (keyset pagination): a row is never skipped or
shown twice because rows were added meanwhile, and each page costs the same however deep.
Every statement reads one table, so a reader never holds one table's lock while it waits for
another's (the rebuild's swap takes them in turn).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

import psycopg
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Select,
    Table,
    Text,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy import text as sql_text

from hookline.config import PROJECTOR, consumer_name
from hookline.db import checkpoints, outbox
from hookline.db.models import PAYLOAD_WORDS, Booking, EmailOutbox, Event, Transaction
from hookline.db.outbox import EmailMissing as EmailMissing  # what retry_email raises
from hookline.db.outbox import NotRetryable as NotRetryable
from hookline.domain.bookings import Template
from hookline.domain.currencies import format_amount
from hookline.log.ends import LogEnd, LogEnds
from hookline.log.envelope import Envelope
from hookline.senders.base import Interpreter

log = logging.getLogger(__name__)

_transactions = cast(Table, Transaction.__table__)
_bookings = cast(Table, Booking.__table__)
_events = cast(Table, Event.__table__)
_outbox = cast(Table, EmailOutbox.__table__)

TRANSACTION_STATUSES = ("pending", "succeeded", "failed", "refunded", "partially_refunded",
                        "timed_out")
BOOKING_STATUSES = ("pending", "confirmed", "cancelled", "expired", "refunded")
OUTCOMES = ("applied", "duplicate", "ignored", "rejected")
OUTBOX_STATUSES = outbox.STATUSES
TEMPLATES: tuple[str, ...] = get_args(Template)
TRAIL_LIMIT = 500  # the most recent records of a trail; the rest are in GET /v1/events

# constant predicates, so that the partial indexes of migration 0004 match them
TRANSACTION_FLAGS: dict[str, ColumnElement[bool]] = {
    "disputed": _transactions.c.disputed,
    "refunded": _transactions.c.refunded_amount > literal_column("0"),
}
BOOKING_FLAGS: dict[str, ColumnElement[bool]] = {
    "late_payment": _bookings.c.late_payment,
    "amount_mismatch": _bookings.c.amount_mismatch,
}

Filter = Callable[[Any], ColumnElement[bool]]
Row = dict[str, Any]


@dataclass(frozen=True)
class Listing:
    """One list: its table, its key (newest first, unique), its filters."""

    name: str
    table: Table
    key: tuple[str, ...]
    filters: Mapping[str, Filter]
    omit: tuple[str, ...] = ()  # columns too large for a list

    def key_columns(self) -> list[Column[Any]]:
        return [self.table.c[name] for name in self.key]

    def statements(self, filters: Mapping[str, Any], limit: int,
                   after: Sequence[Any] | None = None) -> list[Select[Any]]:
        """What reads the page after `after` (a row's key), in order, each one row more than
        `limit` to tell whether more follow. Two statements when the page starts among the rows
        whose first key column is null: those sort first, and one index range cannot hold both
        the rest of them and every row after them."""
        shown = [c for c in self.table.c if c.name not in self.omit]
        base = select(*shown)
        for name, value in filters.items():
            base = base.where(self.filters[name](value))
        columns = self.key_columns()
        if after is None:
            parts = [base]
        elif after[0] is None:
            parts = [base.where(columns[0].is_(None), _older_than(columns[1:], after[1:])),
                     base.where(columns[0].is_not(None))]
        else:
            parts = [base.where(_older_than(columns, after))]
        order = [c.desc() for c in columns]  # descending puts nulls first
        return [part.order_by(*order).limit(limit + 1) for part in parts]


@dataclass(frozen=True)
class Page:
    items: list[Row]
    next_key: tuple[Any, ...] | None


def _older_than(columns: list[Column[Any]], key: Sequence[Any]) -> ColumnElement[bool]:
    """Rows after `key` in descending order (a null column compares as unknown: excluded)."""
    if len(columns) == 1:
        return cast(ColumnElement[bool], columns[0] < key[0])
    return tuple_(*columns) < tuple_(*key)


TRANSACTIONS = Listing("transactions", _transactions, ("created_at", "transaction_id", "source"), {
    "status": lambda v: _transactions.c.status == v,
    "source": lambda v: _transactions.c.source == v,
    "booking_reference": lambda v: _transactions.c.booking_reference == v,
    "created_after": lambda v: _transactions.c.created_at >= v,
    "created_before": lambda v: _transactions.c.created_at < v,
    "flag": lambda v: TRANSACTION_FLAGS[v],
})
BOOKINGS = Listing("bookings", _bookings, ("created_at", "reference"), {
    "status": lambda v: _bookings.c.status == v,
    "customer_email": lambda v: _bookings.c.customer_email == v,
    "flag": lambda v: BOOKING_FLAGS[v],
    "created_after": lambda v: _bookings.c.created_at >= v,
    "created_before": lambda v: _bookings.c.created_at < v,
})
SEARCH_MIN_LENGTH = 3  # shorter text is no search: it matches much of the log


def payload_contains(text: str) -> ColumnElement[bool]:
    """Records whose payload holds `text`'s words in a row, ignoring case: an email, a
    reference, an amount as written. Whole words only (the index holds words, not parts of
    them); operators of the query syntax in `text` are words like any other."""
    query = func.phraseto_tsquery(literal_column("'simple'::regconfig"), text)
    return cast(ColumnElement[bool], PAYLOAD_WORDS.op("@@")(query))


# offsets count within a partition: (offset, partition) is unique; migration 0005's indexes
EVENTS = Listing("events", _events, ("offset", "partition"), {
    "partition": lambda v: _events.c.partition == v,
    "source": lambda v: _events.c.source == v,
    "type": lambda v: _events.c.type == v,
    "subject": lambda v: _events.c.subject == v,
    "outcome": lambda v: _events.c.outcome == v,
    "received_after": lambda v: _events.c.received_at >= v,
    "received_before": lambda v: _events.c.received_at < v,
    "q": payload_contains,
}, omit=("payload",))
OUTBOX = Listing("outbox", _outbox, ("id",), {
    "status": lambda v: _outbox.c.status == v,
    "template": lambda v: _outbox.c.template == v,
}, omit=outbox.LARGE)


def page(conn: Connection, listing: Listing, filters: Mapping[str, Any], limit: int,
         after: Sequence[Any] | None = None) -> Page:
    rows: list[Row] = []
    for statement in page_statements(conn, listing, filters, limit, after):
        rows += [_shape(dict(row)) for row in conn.execute(statement).mappings()]
        if len(rows) > limit:
            break
    if len(rows) <= limit:
        return Page(rows, None)
    shown = rows[:limit]
    return Page(shown, tuple(shown[-1][name] for name in listing.key))


WALKED_SHARE = 0.05  # rarer words are found by the index, then sorted: newer rows are few
def page_statements(conn: Connection, listing: Listing, filters: Mapping[str, Any], limit: int,
                    after: Sequence[Any] | None = None) -> list[Select[Any]]:
    """What `page` runs: the listing's statements, a payload search's sorting its matches
    unless each of its words is common."""
    statements = listing.statements(filters, limit, after)
    if listing is EVENTS and "q" in filters and not _common_words(conn, filters["q"]):
        statements = [_searched_first(statement) for statement in statements]
    return statements


# the share of the payloads holding q's rarest word, by the index's statistics (0 when unlisted)
_RAREST_WORD = sql_text("""
    SELECT min(coalesce(listed.share, 0))
    FROM pg_stats AS s,
         unnest(tsvector_to_array(to_tsvector('simple'::regconfig, :q))) AS word,
         LATERAL (SELECT max(m.share) AS share
                  FROM unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs)
                       AS m(elem, share) WHERE m.elem = word) AS listed
    WHERE s.schemaname = current_schema() AND s.tablename = 'events_payload_search'""")


def _common_words(conn: Connection, q: str) -> bool:
    """Whether each word of q is in at least WALKED_SHARE of the payloads, so that walking the
    records newest first finds a page soon."""
    share = conn.execute(_RAREST_WORD, {"q": q}).scalar()
    return share is not None and float(share) >= WALKED_SHARE


def _searched_first(statement: Select[Any]) -> Select[Any]:
    """The statement sorting its matches rather than walking the records newest first: for a
    word it has no statistics of, or words that are rarely together, the planner guesses far
    too many rows and would walk the whole table. `+ 0` hides the primary key's order."""
    return statement.order_by(None).order_by((_events.c.offset + 0).desc(),
                                             _events.c.partition.desc())


def _shape(row: Row) -> Row:
    """Amounts as exact decimal strings with the currency's places."""
    for name in ("amount", "refunded_amount", "total_amount"):
        if name in row:
            row[name] = format_amount(row[name], row.get("currency"))
    return row


class Ambiguous(LookupError):
    """Several sources have a transaction with this id; `candidates` names each."""

    def __init__(self, transaction_id: str, candidates: list[Row]) -> None:
        super().__init__(f"{len(candidates)} sources have a transaction {transaction_id!r}: "
                         "choose one with ?source=")
        self.candidates = candidates


def transaction(conn: Connection, transaction_id: str,
                interpreters: Mapping[str, Interpreter] | None = None,
                source: str | None = None) -> Row | None:
    """The transaction with this id (of `source` when given); with `interpreters`, also its
    event trail under "events". Ambiguous when several sources have the id."""
    query = select(_transactions).where(_transactions.c.transaction_id == transaction_id)
    if source is not None:
        query = query.where(_transactions.c.source == source)
    rows = [_shape(dict(row)) for row in conn.execute(
        query.order_by(_transactions.c.source)).mappings()]
    if len(rows) > 1:
        raise Ambiguous(transaction_id, [{"transaction_id": r["transaction_id"],
                                          "source": r["source"], "status": r["status"]}
                                         for r in rows])
    if not rows:
        return None
    found = rows[0]
    if interpreters is not None:
        found["events"] = transaction_trail(conn, found, interpreters)
    return found


def transaction_trail(conn: Connection, found: Row,
                      interpreters: Mapping[str, Interpreter]) -> list[Row]:
    """Records about this payment: its subject is the payment's id, or its booking's reference,
    and the source's own interpretation names the payment (a booking's records name others,
    another source's records with the same id another payment)."""
    transaction_id, source = found["transaction_id"], found["source"]
    subjects = [s for s in (transaction_id, found["booking_reference"]) if s]
    return [row for row in _trail(conn, subjects, with_payload=True)
            if _names(row, transaction_id, source, interpreters)]


def _names(row: Row, transaction_id: str, source: str,
           interpreters: Mapping[str, Interpreter]) -> bool:
    if row["source"] == source and row["subject"] == transaction_id:
        return True
    interpret = interpreters.get(row["source"])
    if row["source"] not in (source, "scheduler") or interpret is None or row["payload"] is None:
        return False
    envelope = Envelope(row["id"], row["source"], row["type"], row["subject"],
                        row["received_at"], row["payload"].encode())
    try:
        events = interpret(envelope)
    except Exception:  # a record that cannot be read names no payment
        return False
    # a time-out names its payment's source (none in records written before it did)
    return any(getattr(event, "transaction_id", None) == transaction_id
               and getattr(event, "source", None) in (source, None) for event in events)


def _trail(conn: Connection, subjects: Sequence[str], with_payload: bool = False) -> list[Row]:
    columns: list[ColumnElement[Any]] = [c for c in _events.c if c.name != "payload"]
    if with_payload:  # as stored, numbers exact, for the sources' interpreters
        columns.append(_events.c.payload.cast(Text).label("payload"))
    rows = conn.execute(select(*columns).where(_events.c.subject.in_(subjects))
                        .order_by(_events.c.offset.desc(), _events.c.partition.desc())
                        .limit(TRAIL_LIMIT)).mappings()
    trail = [dict(row) for row in rows]
    trail.reverse()  # oldest first: the order things happened in
    return trail


def booking(conn: Connection, reference: str) -> Row | None:
    """The booking with its transactions, its emails and its event trail."""
    row = conn.execute(select(_bookings).where(_bookings.c.reference == reference)
                       ).mappings().first()
    if row is None:
        return None
    found = _shape(dict(row))
    found["transactions"] = [_shape(dict(r)) for r in conn.execute(
        select(_transactions).where(_transactions.c.booking_reference == reference)
        .order_by(_transactions.c.created_at, _transactions.c.transaction_id,
                  _transactions.c.source)).mappings()]
    found["emails"] = outbox.of_booking(_driver(conn), reference)
    subjects = [reference, *{t["transaction_id"] for t in found["transactions"]}]
    found["events"] = _trail(conn, subjects)
    return found


def event(conn: Connection, offset: int, partition: int = 0) -> Row | None:
    """One record as projected, its payload as the stored JSON text (numbers kept exact)."""
    columns = [c for c in _events.c if c.name != "payload"]
    row = conn.execute(select(*columns, _events.c.payload.cast(Text).label("payload"))
                       .where(_events.c.offset == offset, _events.c.partition == partition)
                       ).mappings().first()
    return None if row is None else dict(row)


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under `conn`, in its transaction: the outbox and the checkpoints
    are hookline.db's, written in psycopg's SQL."""
    return cast(psycopg.Connection[Any], conn.connection.driver_connection)


def retry_dead(conn: Connection) -> list[int]:
    """Every dead email becomes pending again, due now; their ids."""
    return outbox.retry_dead(_driver(conn))


def retry_email(conn: Connection, email_id: int) -> Row:
    """A dead or failed email becomes pending, due now, with its attempts counted anew."""
    return outbox.retry(_driver(conn), email_id)


def status(conn: Connection, log_ends: LogEnds) -> Row:
    """The log's end per partition, each consumer's checkpoint and its lag behind its own
    partition's end (null for a consumer that is no partition's projector), the outbox."""
    count = len(log_ends.partitions)
    readers = {consumer_name(PROJECTOR, k, count): k for k in range(count)}
    consumers = [
        {"consumer": name, "checkpoint": checkpoint,
         "lag": _lag(log_ends.partitions[readers[name]] if name in readers else None, checkpoint)}
        for name, checkpoint in checkpoints.every(_driver(conn))]
    whole = log_ends.whole()
    return {
        "log": {"stream": whole.stream, "end_offset": whole.end_offset, "error": whole.error},
        "partitions": [{"partition": k, "stream": end.stream, "end_offset": end.end_offset,
                        "error": end.error, "consumer": consumer_name(PROJECTOR, k, count)}
                       for k, end in enumerate(log_ends.partitions)],
        "consumers": consumers,
        "outbox": _outbox_status(conn),
    }


def _lag(end: LogEnd | None, checkpoint: int) -> int | None:
    if end is None or end.end_offset is None:
        return None
    return max(0, end.end_offset - checkpoint)


def _outbox_status(conn: Connection) -> Row:
    driver = _driver(conn)
    depth = outbox.depth(driver)
    counts = {"pending": depth.pending, "sent": outbox.sent_count(driver),
              "failed": depth.failed, "dead": depth.dead}
    return {"counts": counts, "oldest_pending_age_seconds": depth.oldest_owed_seconds}
