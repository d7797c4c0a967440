"""`hookline rebuild`: replay the log from offset 0 into fresh tables, then swap them in.

The fresh tables live in a schema of their own, made by the same migrations, and are filled by
the projector's own `project_batch` on a connection whose search_path is that schema. Every
partition of the log is replayed from its offset 0, a batch of each in turn, with a checkpoint
of its own (`rebuild`, or `rebuild.K` with several partitions); the rebuild is the only writer
of its schema, so it takes no row locks. The live tables keep serving until the swap, one
transaction that:
  1. locks events, transactions and bookings (ACCESS EXCLUSIVE, events first: every projector
     batch reads events first, so the batches in flight finish and the next ones wait),
  2. reads each partition's live checkpoint and replays its last records up to it, so the new
     tables are exactly what the live ones would be at those offsets and the checkpoints stay
     valid,
  3. moves the live tables out and the new ones in, and drops the old ones.
A lock not granted within half a second rolls the swap back and it is tried again, so the swap
never sits in a lock queue for long (API readers queue behind it) and always loses a deadlock.

What a rebuild never touches: the email outbox (a replay's emails were owed already, or are
reported by --dry-run and left to the operator: a rebuild sends nothing), the checkpoints and
the operators' rejections (read from the live table, obeyed as the projector obeys them).
Times of projection (when a row was written, not what happened) cannot be replayed: for every
row the replay reproduced, they are carried over from the live row, so a rebuild that changes
nothing gives identical tables and never restarts a payment's timeout. With several partitions
a transaction's or booking's last_offset is carried over too: which partition's record reached a
shared row last depends on how the live projectors' commits interleaved, not on the log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import psycopg
from alembic import command
from psycopg import errors, sql
from sqlalchemy.engine import make_url
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from hookline.config import PROJECTOR, Settings, consumer_name
from hookline.db import checkpoints, outbox
from hookline.db.locks import lock_key
from hookline.db.schema import alembic_config
from hookline.lifecycle import Stopper
from hookline.log.reader import Record, StreamReader
from hookline.projection.batch import Partition, project_batch
from hookline.senders.registry import interpreters

log = logging.getLogger(__name__)
SCHEMA, RETIRED, LIVE = "hookline_rebuild", "hookline_retired", "public"
CONSUMER = "rebuild"
# in lock order, with each table's primary key; the outbox and the checkpoints stay live
KEYS = {"events": ("offset", "partition"), "transactions": ("transaction_id", "source"),
        "bookings": ("reference",)}
PROJECTION_TIMES = {"events": ("projected_at",),
                    "transactions": ("created_at", "processed_at", "updated_at"),
                    "bookings": ("updated_at",)}
LOCK_TIMEOUT = "500ms"
EXAMPLES = 3


class RebuildFailed(Exception):
    """The rebuild could not finish; the live tables are as they were."""


class RebuildInterrupted(RebuildFailed):
    """Asked to stop before the swap."""


@dataclass
class TableDiff:
    table: str
    added: int = 0
    removed: int = 0
    changed: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass
class Report:
    offset: int  # the live checkpoint; with several partitions, the highest of `checkpoints`
    swapped: bool
    rows: dict[str, int] = field(default_factory=dict)
    diffs: list[TableDiff] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)  # per live consumer


class Progress:
    """A progress line on a terminal (redrawn), or a line every few seconds in a log file."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out, self.interactive = out, out.isatty()
        self.started = self.shown = self.moved = time.monotonic()
        self.done = 0

    def update(self, done: int, total: int, final: bool = False) -> None:
        now = time.monotonic()
        if done != self.done:  # the rate is of records replayed, not of the swap after them
            self.done, self.moved = done, now
        if not final and now - self.shown < (0.2 if self.interactive else 2.0):
            return
        self.shown = now
        rate = done / max(self.moved - self.started, 1e-6)
        share = done / total if total > 0 else 1.0
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(share * 24)
        line = (f"rebuild [{'#' * filled}{'.' * (24 - filled)}] {done:,}/{total:,} records "
                f"{share:4.0%}  {rate:,.0f}/s  ETA {_clock(eta)}")
        end = "\n" if final or not self.interactive else ""
        self.out.write(("\r" if self.interactive else "") + line + end)
        self.out.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class _Feed:
    """One partition's records from offset 0, handed out no further than a given offset."""

    def __init__(self, settings: Settings, index: int, should_stop: Callable[[], bool]) -> None:
        self.stream = settings.streams[index]
        self.consumer = consumer_name(CONSUMER, index, settings.partitions)  # in the new schema
        self.live = consumer_name(PROJECTOR, index, settings.partitions)
        # the only writer of the new schema: no row locks; the operators' rejections are live
        self.partition = Partition(index, rejections=(LIVE, "operator_rejections"))
        self.reader = StreamReader(settings.partition(index), 0, settings.projector_batch,
                                   self.consumer, should_stop)
        self.batches = self.reader.batches()
        self.pending: list[Record] = []
        self.done = -1  # the last offset projected into the fresh tables
        self.total = 0  # records to replay, as far as known

    def take(self, upto: int, limit: int) -> list[Record]:
        if not self.pending:
            batch = next(self.batches, None)
            if batch is None:
                raise RebuildInterrupted("stopped before the swap")
            self.reader.ack(batch)  # a rebuild that dies starts again from 0: nothing to keep
            self.pending = batch.records
        count = 0
        while count < min(limit, len(self.pending)) and self.pending[count].offset <= upto:
            count += 1
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken


class Rebuild:
    def __init__(self, settings: Settings, stopper: Stopper, progress: Progress | None = None,
                 lock_wait: float = 60.0) -> None:
        self.settings, self.stopper, self.lock_wait = settings, stopper, lock_wait
        self.progress = progress
        self.interpreters = interpreters()
        self.feeds: list[_Feed] = []  # one per partition, partition 0 first

    @property
    def replayed(self) -> int:
        return sum(feed.done + 1 for feed in self.feeds)

    @property
    def total(self) -> int:
        return sum(feed.total for feed in self.feeds)

    def run(self, dry_run: bool = False) -> Report:
        with psycopg.connect(self.settings.psycopg_url, autocommit=True) as control:
            locked = control.execute("SELECT pg_try_advisory_lock(%s)",
                                     (lock_key("rebuild"),)).fetchone()
            if locked is None or not locked[0]:
                raise RebuildFailed("another rebuild is running")
            try:
                report = self._run(control, dry_run)
            finally:
                self._discard(control)
        if self.progress is not None:
            self.progress.update(self.replayed, self.total, final=True)
        return report

    def _run(self, control: psycopg.Connection[Any], dry_run: bool) -> Report:
        self._discard(control)  # what a rebuild that died left behind
        control.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        self._migrate()
        self.feeds = [_Feed(self.settings, k, self.stopper.is_set)
                      for k in range(self.settings.partitions)]
        try:
            with psycopg.connect(self.settings.psycopg_url, prepare_threshold=0,
                                 options=f"-c search_path={SCHEMA}") as work:
                self._replay(work, control)
                if dry_run:
                    return self._locked(self._compare, work, control)
                self._carry_times(control)
                self._analyze(control)
                report = self._locked(self._swap, work, control)
        finally:
            for feed in self.feeds:
                feed.reader.close()
        report.rows = {t: _count(control, LIVE, t) for t in KEYS}  # counted after the locks
        return report

    def _migrate(self) -> None:
        """The fresh schema from the same migrations as the live one."""
        url = make_url(self.settings.database_url)
        given = url.query.get("options")
        options = " ".join([*([given] if isinstance(given, str) else given or ()),
                            f"-csearch_path={SCHEMA}"])
        url = url.update_query_dict({"options": options})
        with _quiet_alembic():
            command.upgrade(alembic_config(url.render_as_string(hide_password=False)), "head")

    def _replay(self, work: psycopg.Connection[Any], control: psycopg.Connection[Any]) -> None:
        """Project up to the live checkpoints, chasing them while the live projectors move on,
        until a pass leaves at most a batch per partition for the catch-up under the locks."""
        while True:
            before = self.replayed
            self._project_upto(work, self._live_checkpoints(control))
            if self.replayed - before <= self.settings.projector_batch * len(self.feeds):
                break
        log.info("replayed the log to %s",
                 ", ".join(f"offset {feed.done} of {feed.stream}" for feed in self.feeds))

    def _project_upto(self, work: psycopg.Connection[Any], upto: Sequence[int]) -> None:
        """Project each partition up to its offset in `upto`, a batch of each in turn."""
        behind = list(zip(self.feeds, upto, strict=True))
        for feed, target in behind:
            feed.total = max(feed.total, target + 1)
        while behind := [(feed, target) for feed, target in behind if feed.done < target]:
            for feed, target in behind:
                self._project_batch(work, feed, target)

    def _project_batch(self, work: psycopg.Connection[Any], feed: _Feed, upto: int) -> None:
        records = feed.take(upto, self.settings.projector_batch)
        if not records:
            raise RebuildFailed(f"{feed.stream} has no record between offsets {feed.done + 1} "
                                f"and {upto}, which the live projector projected")
        project_batch(work, feed.consumer, records, feed.done, self.interpreters,
                      self.settings.booking_ttl, feed.partition)
        feed.done = records[-1].offset
        if self.progress is not None:
            self.progress.update(self.replayed, self.total)

    def _live_checkpoints(self, control: psycopg.Connection[Any]) -> list[int]:
        """Each partition's live checkpoint, partition 0 first (-1 before its first commit)."""
        found = checkpoints.of(control, [f.live for f in self.feeds], LIVE)
        return [found.get(feed.live, -1) for feed in self.feeds]

    def _locked(self, finish: Any, work: psycopg.Connection[Any],
                control: psycopg.Connection[Any]) -> Report:
        """Run `finish` in one transaction, tried again while its locks are not granted."""
        retrying = Retrying(
            retry=retry_if_exception_type((errors.LockNotAvailable, errors.DeadlockDetected)),
            stop=stop_after_delay(self.lock_wait), wait=wait_random_exponential(0.05, 1.0),
            before_sleep=before_sleep_log(log, logging.INFO), reraise=True)
        try:
            for attempt in retrying:
                with attempt, control.transaction():
                    control.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    report: Report = finish(work, control)
                    return report
        except (errors.LockNotAvailable, errors.DeadlockDetected):
            raise RebuildFailed(f"the live tables stayed locked by others for "
                                f"{self.lock_wait:.0f} s; nothing was swapped") from None
        raise AssertionError("unreachable")

    def _catch_up(self, work: psycopg.Connection[Any],
                  control: psycopg.Connection[Any]) -> dict[str, int]:
        """Replay every partition to its live checkpoint; the checkpoints, by live consumer."""
        live = self._live_checkpoints(control)
        for feed, checkpoint in zip(self.feeds, live, strict=True):
            if checkpoint < feed.done:
                raise RebuildFailed(f"the live checkpoint of {feed.live} went back to "
                                    f"{checkpoint} during the rebuild")
        self._project_upto(work, live)
        return {feed.live: checkpoint for feed, checkpoint in zip(self.feeds, live, strict=True)}

    def _swap(self, work: psycopg.Connection[Any], control: psycopg.Connection[Any]) -> Report:
        tables = sql.SQL(", ").join(sql.Identifier(LIVE, t) for t in KEYS)
        control.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(tables))
        replayed_before, records_before = [feed.done for feed in self.feeds], self.replayed
        live = self._catch_up(work, control)
        self._carry_times(control, after=replayed_before)
        control.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RETIRED)))
        for table in KEYS:
            control.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(LIVE, table), sql.Identifier(RETIRED)))
            control.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(SCHEMA, table), sql.Identifier(LIVE)))
        control.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(RETIRED)))
        log.info("swapped in the rebuilt %s at %s (%d records replayed under the locks)",
                 ", ".join(KEYS), ", ".join(f"{c} {offset}" for c, offset in live.items()),
                 self.replayed - records_before)
        return Report(max(live.values()), swapped=True, checkpoints=live)

    def _compare(self, work: psycopg.Connection[Any], control: psycopg.Connection[Any]) -> Report:
        # the projectors' next commits wait (their checkpoint rows are locked); readers do not
        control.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
            sql.Identifier(LIVE, "consumer_offsets")))
        live = self._catch_up(work, control)
        diffs = [_diff(control, table, self._times(table)) for table in KEYS]
        diffs.append(_outbox_diff(control))
        return Report(max(live.values()), swapped=False, checkpoints=live,
                      rows={t: _count(control, SCHEMA, t) for t in KEYS}, diffs=diffs)

    def _carry_times(self, control: psycopg.Connection[Any],
                     after: Sequence[int] | None = None) -> None:
        """Projection times of the live rows onto the fresh rows with the same content."""
        for table, key in KEYS.items():
            times = self._times(table)
            content = [c for c in _columns(control, table) if c not in times]
            since: sql.Composable = sql.SQL("")
            if after is not None:  # only the rows the last records wrote
                since = sql.SQL(" AND ") + _written_after(table, after)
            control.execute(sql.SQL(
                "UPDATE {fresh} AS r SET {sets} FROM {live} AS l "
                "WHERE {same} AND ({r}) IS NOT DISTINCT FROM ({l}){since}").format(
                    fresh=sql.Identifier(SCHEMA, table), live=sql.Identifier(LIVE, table),
                    sets=sql.SQL(", ").join(sql.SQL("{0} = l.{0}").format(sql.Identifier(t))
                                            for t in times),
                    same=_same_key(key), r=_row("r", content), l=_row("l", content),
                    since=since))

    def _times(self, table: str) -> tuple[str, ...]:
        """Columns a replay cannot know, carried over from the live rows with the same content:
        the times of projection and, with several partitions, a transaction's or booking's
        last_offset (which partition's record came last was the live projectors' race)."""
        raced = ("last_offset",) if self.settings.partitions > 1 and table != "events" else ()
        return PROJECTION_TIMES[table] + raced

    def _analyze(self, control: psycopg.Connection[Any]) -> None:
        """Statistics (and space back from the carried times) before the tables serve."""
        for table in KEYS:
            control.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(SCHEMA, table)))

    def _discard(self, control: psycopg.Connection[Any]) -> None:
        if control.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            control.rollback()
        for schema in (SCHEMA, RETIRED):
            control.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


def _written_after(table: str, after: Sequence[int]) -> sql.Composable:
    """The rows a record past offset after[K] of partition K may have written: for transactions
    and bookings, whose last_offset does not say its partition, a superset of them."""
    if table != "events":
        return sql.SQL("r.last_offset > {}").format(sql.Literal(min(after)))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(
        sql.SQL("(r.{} = {} AND r.{} > {})").format(
            sql.Identifier("partition"), sql.Literal(k), sql.Identifier("offset"),
            sql.Literal(offset)) for k, offset in enumerate(after)))


def _same_key(key: Sequence[str]) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("r.{0} = l.{0}").format(sql.Identifier(c)) for c in key)


def _columns(control: psycopg.Connection[Any], table: str) -> list[str]:
    """The live table's columns, which must be the fresh table's: the same migrations."""
    query = ("SELECT column_name FROM information_schema.columns "
             "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position")
    live = [r[0] for r in control.execute(query, (LIVE, table))]
    fresh = [r[0] for r in control.execute(query, (SCHEMA, table))]
    if sorted(live) != sorted(fresh):
        raise RebuildFailed(f"the live {table} table does not have the newest schema: "
                            "run 'hookline migrate' first")
    return live


def _row(alias: str, columns: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, c) for c in columns)


def _count(control: psycopg.Connection[Any], schema: str, table: str) -> int:
    row = control.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(schema, table))).fetchone()
    return 0 if row is None else int(row[0])


def _diff(control: psycopg.Connection[Any], table: str, times: Sequence[str]) -> TableDiff:
    """Rows the rebuild would add, remove and change (the columns in `times` aside)."""
    key = KEYS[table]
    content = [c for c in _columns(control, table) if c not in times]
    joined = sql.SQL("FROM {fresh} AS r FULL JOIN {live} AS l ON {same}").format(
        fresh=sql.Identifier(SCHEMA, table), live=sql.Identifier(LIVE, table),
        same=_same_key(key))
    first = sql.Identifier(key[0])  # null only in the missing side of the join
    kinds = {
        "added": sql.SQL("l.{} IS NULL").format(first),
        "removed": sql.SQL("r.{} IS NULL").format(first),
        "changed": sql.SQL("r.{k} IS NOT NULL AND l.{k} IS NOT NULL AND ({r}) IS DISTINCT "
                           "FROM ({l})").format(k=first, r=_row("r", content),
                                                l=_row("l", content)),
    }
    order = sql.SQL(", ").join(sql.SQL("coalesce(r.{0}, l.{0})").format(sql.Identifier(c))
                               for c in key)
    diff = TableDiff(table)
    for kind, where in kinds.items():
        rows = control.execute(sql.SQL(
            "SELECT count(*) OVER (), to_jsonb(r), to_jsonb(l) {joined} WHERE {where} "
            "ORDER BY {order} LIMIT {n}").format(
                joined=joined, where=where, order=order, n=sql.Literal(EXAMPLES))).fetchall()
        setattr(diff, kind, rows[0][0] if rows else 0)
        diff.examples += [_example(kind, key, fresh, live, content) for _, fresh, live in rows]
    return diff


def _example(kind: str, key: Sequence[str], fresh: dict[str, Any] | None,
             live: dict[str, Any] | None, content: Sequence[str]) -> str:
    row = fresh if fresh is not None else live
    assert row is not None
    name = ", ".join(f"{column} {row[column]!r}" for column in key)
    if kind != "changed" or fresh is None or live is None:
        return f"{kind} {name}"
    changes = [f"{c}: {live.get(c)!r} -> {fresh.get(c)!r}" for c in content
               if c != "payload" and live.get(c) != fresh.get(c)]
    if live.get("payload") != fresh.get("payload"):
        changes.append("payload differs")
    return f"changed {name}: " + "; ".join(changes)


def _outbox_diff(control: psycopg.Connection[Any]) -> TableDiff:
    """Emails the replay owes that the outbox lacks, and rows it would not have written."""
    owed, unknown, examples = outbox.compare(control, SCHEMA, LIVE, EXAMPLES)
    return TableDiff("email_outbox", added=owed, removed=unknown,
                     examples=[f"owed {e} (a rebuild adds no email)" for e in examples])


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
