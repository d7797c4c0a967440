"""`hookline reprocess`: project a chosen set of records again through today's code, without a
rebuild (e.g. every `rejected` record of a source since a deploy that fixes its interpretation).

What is projected again: only records whose events row says they left nothing in the
projection, `rejected` or `ignored`; the others of a selection are skipped and counted
(`applied` ones' effects are in the tables and the rules cannot take them back: a rebuild can;
a `duplicate` follows the first record of its id). So a record is projected again at most once
until today's code rejects or ignores it again, and a second reprocess of the same selection
changes nothing. A record rejected by an operator is projected again only when chosen by its
offset, never by a filter, and its rejection is then forgotten (a rebuild would obey it).

How: records are read from the log (the events rows may lack a payload), a partition at a time
in log order, so each subject's records go in log order; each chunk in one transaction that
  1. holds every projector's batch lock (the one `events reject` takes), so no live batch
     interleaves with it on any transaction, booking or email, and waits for those in flight,
  2. locks the records' events rows and skips those no longer without effect (projected again
     by another run in the meantime),
  3. deletes those rows and projects the records as the projector would (the same rules, the
     emails enqueued in the same transaction, a failing record `rejected` alone), but moves no
     checkpoint and obeys no operator's rejection.
An email is never owed twice: the outbox keeps one row per (record id, template).
A dry run does all of it in one transaction rolled back, so it pauses the projectors while it
runs; its report lists the rows that would change and the emails that would be enqueued.

Later records of a subject are not projected again: their effects stay, and the rules join a
record arriving late as they join any late delivery, which gives what log order gives except
where they keep the first of two facts (a report conflicting with one applied later is
rejected, not the later one; a booking cancelled before its creation is re-projected gets no
confirmation email). Only a rebuild gives log order there; the dry run shows which.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import groupby
from operator import itemgetter
from typing import Any

import psycopg

from hookline.config import PROJECTOR, Settings, consumer_name
from hookline.db import bookings, events, outbox, rejections, transactions
from hookline.db.locks import lock_key
from hookline.log.reader import Batch, OffsetGap, Record, StreamReader
from hookline.log.topology import read_log_ends
from hookline.projection.batch import Partition, reproject
from hookline.senders.base import Interpreter
from hookline.senders.registry import interpreters

log = logging.getLogger(__name__)
CHUNK = 500  # records a transaction: the projectors wait for each one
EXAMPLES = 100  # records, rows and emails a report lists, besides counting them all
IDLE_SECONDS = 30.0  # waiting longer than this for the log to hand over a record is a failure
PROJECTION_TIMES = frozenset({"updated_at", "processed_at"})  # when projected: not a change


class SelectionInvalid(ValueError):
    """The selection names no records, or names them two ways at once."""


class NotProjected(LookupError):
    """A chosen offset has no events row: the projector has not reached it, or it is no record."""


class ReprocessFailed(Exception):
    """The reprocess stopped; the chunks committed before stay committed."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Records by (partition, offset), or the events rows matching a filter."""

    records: tuple[tuple[int, int], ...] = ()
    source: str | None = None
    type: str | None = None
    outcome: str | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before

    def __post_init__(self) -> None:
        filtered = self.criteria() or self.since is not None or self.until is not None
        if self.records and filtered:
            raise SelectionInvalid("choose records by offset or by a filter, not both")
        if not self.records and not filtered:
            raise SelectionInvalid("choose records by offset, or filter them by source, type, "
                                   "outcome or time (to project every record again: rebuild)")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise SelectionInvalid("the time span is empty: since must come before until")

    def criteria(self) -> dict[str, str]:
        found = {"source": self.source, "type": self.type, "outcome": self.outcome}
        return {column: value for column, value in found.items() if value is not None}


@dataclass(frozen=True, slots=True)
class RecordChange:
    """A record projected again: its outcome and reason before and after."""

    partition: int
    offset: int
    before: str
    after: str
    error: str | None


@dataclass(frozen=True, slots=True)
class RowChange:
    """A transaction or booking the records change: the columns that differ, before and after
    (before is None for a new row)."""

    table: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any]


@dataclass
class Summary:
    """What a reprocess did, or with dry_run would do; every list holds the first EXAMPLES."""

    dry_run: bool = False
    selected: int = 0  # records the selection names
    skipped: int = 0  # of them, applied or duplicate: their effects are already projected
    operator_rejected: int = 0  # left out of a filter: rejected by an operator
    reprocessed: int = 0
    changed: int = 0  # reprocessed with another outcome than before
    unchanged: int = 0
    still_rejected: int = 0
    emails_enqueued: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # after, of those reprocessed
    rows_changed: dict[str, int] = field(default_factory=dict)  # by table, dry run only
    records: list[RecordChange] = field(default_factory=list)  # those whose outcome changed
    rows: list[RowChange] = field(default_factory=list)  # dry run only
    emails: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def audited(self) -> tuple[list[str], dict[str, Any]]:
        """What its audit row says: the records whose outcome changed (the first EXAMPLES),
        and the counts."""
        counts = ("dry_run", "selected", "skipped", "reprocessed", "changed", "emails_enqueued")
        return ([f"events:{r.partition}:{r.offset}" for r in self.records],
                {name: getattr(self, name) for name in counts})


def reprocess(settings: Settings, selection: Selection, dry_run: bool = False,
              sources: Mapping[str, Interpreter] | None = None, chunk: int = CHUNK,
              should_stop: Callable[[], bool] = lambda: False) -> Summary:
    """Project the selected records that left nothing in the projection again (see above)."""
    with psycopg.connect(settings.psycopg_url, autocommit=True) as control:
        exclusive = control.execute("SELECT pg_try_advisory_lock(%s)",
                                    (lock_key("rebuild"),)).fetchone()
        if exclusive is None or not exclusive[0]:  # held until this connection closes
            raise ReprocessFailed("a rebuild or another reprocess is running; try again after it")
        chosen, summary = _select(control, selection)
        summary.dry_run = dry_run
        run = _Run(settings, interpreters() if sources is None else sources, summary, chunk,
                   should_stop)
        with psycopg.connect(settings.psycopg_url, prepare_threshold=0) as work:
            if dry_run:
                with work.transaction(force_rollback=True):
                    run.all(work, chosen)
                    _diff(work, control, run.now, summary)
                    run.emails(work)
            else:
                run.all(work, chosen)
                with work.transaction():
                    run.emails(work)
    log.info("reprocess%s: %d records selected, %d projected again (%d changed), %d emails",
             " (dry run)" if dry_run else "", summary.selected, summary.reprocessed,
             summary.changed, summary.emails_enqueued)
    return summary


def _select(conn: psycopg.Connection[Any],
            selection: Selection) -> tuple[dict[int, list[int]], Summary]:
    """The offsets to project again, by partition in log order, and the summary so far."""
    if selection.records:
        rows = _chosen(conn, selection.records)
    else:
        rows = events.matching(conn, selection.criteria(), selection.since, selection.until)
    summary = Summary(selected=len(rows))
    chosen: dict[int, list[int]] = {}
    for partition, group in groupby(rows, key=itemgetter(0)):
        offsets = [offset for _, offset, outcome in group if outcome in events.WITHOUT_EFFECT]
        if not selection.records:
            refused = rejections.among(conn, partition, offsets)
            summary.operator_rejected += len(refused)
            offsets = [offset for offset in offsets if offset not in refused]
        if offsets:
            chosen[partition] = offsets
    summary.skipped = summary.selected - summary.operator_rejected - sum(map(len, chosen.values()))
    return chosen, summary


def _chosen(conn: psycopg.Connection[Any],
            records: Sequence[tuple[int, int]]) -> list[tuple[int, int, str]]:
    rows: list[tuple[int, int, str]] = []
    for partition, group in groupby(sorted(set(records)), key=itemgetter(0)):
        offsets = [offset for _, offset in group]
        found = events.projected(conn, partition, offsets)
        missing = [offset for offset in offsets if offset not in found]
        if missing:
            raise NotProjected(f"offset {missing[0]} of partition {partition} has not been "
                               "projected: the projector will project it")
        rows += [(partition, offset, found[offset][0]) for offset in offsets]
    return rows


class _Run:
    """One reprocess: the records read from the log and projected again, chunk by chunk."""

    def __init__(self, settings: Settings, sources: Mapping[str, Interpreter], summary: Summary,
                 chunk: int, should_stop: Callable[[], bool]) -> None:
        self.settings, self.sources, self.summary = settings, sources, summary
        self.chunk, self.should_stop = chunk, should_stop
        self.consumers = [consumer_name(PROJECTOR, k, settings.partitions)
                          for k in range(settings.partitions)]
        self.now = datetime.now(UTC)  # every row it writes says so: the dry run's diff finds them
        self.ids: list[str] = []  # of the records projected again
        self.outcomes: Counter[str] = Counter()

    def all(self, conn: psycopg.Connection[Any], chosen: Mapping[int, list[int]]) -> None:
        if chosen:
            self._check_log(chosen)
        for partition, offsets in chosen.items():
            for records in self._read(partition, offsets):
                if self.summary.dry_run:  # one transaction, so later chunks see earlier ones
                    self._chunk(conn, partition, records)
                    continue
                with conn.transaction():
                    self._chunk(conn, partition, records)
        self.summary.outcomes = dict(self.outcomes)

    def _check_log(self, chosen: Mapping[int, list[int]]) -> None:
        """Each partition read holds its last chosen offset, or the reprocess fails now."""
        ends = read_log_ends(self.settings).partitions
        for partition, offsets in chosen.items():
            end = ends[partition]
            if end.end_offset is None:
                raise ReprocessFailed(f"{end.stream} cannot be read: {end.error}")
            if end.end_offset < offsets[-1]:
                raise ReprocessFailed(f"{end.stream} ends at offset {end.end_offset}: it holds "
                                      f"no record at offset {offsets[-1]}")

    def _chunk(self, conn: psycopg.Connection[Any], partition: int,
               records: list[Record]) -> None:
        rejections.hold(conn, self.consumers)
        before = events.projected(conn, partition, [r.offset for r in records], lock=True)
        kept = [r for r in records
                if r.offset in before and before[r.offset][0] in events.WITHOUT_EFFECT]
        self.summary.skipped += len(records) - len(kept)  # another run projected them since
        if not kept:
            return
        offsets = [record.offset for record in kept]
        events.delete(conn, partition, offsets)
        rejections.remove(conn, partition, offsets)
        reproject(conn, kept, self.sources, self.settings.booking_ttl, Partition(partition),
                  self.now)
        self._count(partition, before, events.projected(conn, partition, offsets))

    def _count(self, partition: int, before: Mapping[int, events.Projected],
               after: Mapping[int, events.Projected]) -> None:
        summary = self.summary
        for offset, (outcome, error, id) in sorted(after.items()):
            was = before[offset][0]
            self.ids.append(id)
            self.outcomes[outcome] += 1
            summary.reprocessed += 1
            summary.still_rejected += outcome == "rejected"
            if outcome == was:
                summary.unchanged += 1
                continue
            summary.changed += 1
            if len(summary.records) < EXAMPLES:
                summary.records.append(RecordChange(partition, offset, was, outcome, error))

    def _read(self, partition: int, offsets: list[int]) -> Iterator[list[Record]]:
        """The records at `offsets` (in log order), a chunk at a time, read from the log."""
        wanted, last = set(offsets), offsets[-1]
        pending: list[Record] = []
        try:
            for batch in self._batches(partition, offsets[0]):
                pending += [record for record in batch.records if record.offset in wanted]
                reached = batch.last_offset >= last
                while len(pending) >= self.chunk or (reached and pending):
                    yield pending[:self.chunk]
                    pending = pending[self.chunk:]
                if reached:
                    return
        except OffsetGap as exc:
            raise ReprocessFailed(str(exc)) from None
        raise ReprocessFailed(f"{self.settings.streams[partition]}: stopped before offset "
                              f"{last} could be read from the log")

    def _batches(self, partition: int, start: int) -> Iterator[Batch]:
        """Batches from `start`, until none came for IDLE_SECONDS."""
        moved = [time.monotonic()]
        reader = StreamReader(self.settings.partition(partition), start,
                              self.settings.projector_batch, "reprocess",
                              lambda: self.should_stop() or
                              time.monotonic() - moved[0] > IDLE_SECONDS)
        try:
            for batch in reader.batches():
                moved[0] = time.monotonic()
                reader.ack(batch)
                yield batch
        finally:
            reader.close()

    def emails(self, conn: psycopg.Connection[Any]) -> None:
        """The emails the records projected again added to the outbox."""
        added = outbox.enqueued_at(conn, self.now, self.ids)
        self.summary.emails_enqueued = len(added)
        self.summary.emails = [{"event_id": e, "template": t, "recipient": r}
                               for e, t, r in added[:EXAMPLES]]


def _diff(work: psycopg.Connection[Any], control: psycopg.Connection[Any], now: datetime,
          summary: Summary) -> None:
    """The transactions and bookings the dry run changed, against the committed rows (which
    stay as they were: the dry run holds the projectors' locks)."""
    paid = transactions.changed_at(work, now)
    known = transactions.with_ids(control, {key[0] for key in paid})
    booked = bookings.changed_at(work, now)
    was_booked = bookings.with_references(control, booked.keys())
    changes = [RowChange("transactions", f"{key[0]} ({key[1]})", *_columns(known.get(key), row))
               for key, row in sorted(paid.items())]
    changes += [RowChange("bookings", key, *_columns(was_booked.get(key), row))
                for key, row in sorted(booked.items())]
    summary.rows_changed = {"transactions": len(paid), "bookings": len(booked)}
    summary.rows = changes[:EXAMPLES]


def _columns(before: Any, after: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The columns that differ, as JSON values, before and after."""
    new = {k: _plain(v) for k, v in asdict(after).items() if k not in PROJECTION_TIMES}
    if before is None:
        return None, new
    old = {k: _plain(v) for k, v in asdict(before).items() if k not in PROJECTION_TIMES}
    differ = [k for k in new if new[k] != old[k]]
    return {k: old[k] for k in differ}, {k: new[k] for k in differ}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
