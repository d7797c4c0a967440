"""`hookline migrate-partitions --to N`: move a one-stream log into N partition streams.

An offline step (docs/scaling.md), run once ingest and the scheduler are stopped and the
projector has projected the old stream to its end and been stopped. It
  1. refuses, changing nothing, unless the projector's checkpoint is at the old stream's end, no
     projector or scheduler runs, and every partition stream is empty;
  2. copies every record of the old stream, bytes and AMQP properties unchanged, in log order, to
     the partition of its subject (a record that is not an envelope to partition 0), with
     publisher confirms: a subject's records end up in one stream, in their old order;
  3. reads each partition stream back, checking that it holds exactly the records copied into it,
     and notes their offsets (not always 0, 1, 2 …: a segment boundary takes an offset);
  4. hands over in one PostgreSQL transaction: checkpoint `projector.K` at the last record copied
     into partition K, the old `projector` checkpoint gone, and the events rows, transactions and
     bookings renumbered to their records' new places.
It holds the leader locks of every projector and of the scheduler throughout, so none can start
meanwhile. Until step 4 commits, PostgreSQL is as it was: a run that stopped earlier is redone
with --restart, which first deletes the partition streams. The old stream is never changed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, LiteralString

import pika
import pika.exceptions
import pika.frame
import psycopg
from psycopg import sql

from hookline.config import MAX_PARTITIONS, PROJECTOR, Settings, consumer_name, partition_of
from hookline.db import checkpoints
from hookline.db.locks import lock_key
from hookline.db.schema import check_reachable
from hookline.lifecycle import Stopper
from hookline.log.envelope import decode
from hookline.log.reader import StreamReader
from hookline.log.topology import (
    declare_stream,
    log_end_offset,
    log_end_offsets,
    log_start_offset,
    open_connection,
)
from hookline.projection.batch import load_checkpoint

log = logging.getLogger(__name__)
NAME = "migrate-partitions"
SCHEDULER = "scheduler"  # the scheduler's leader lock
BATCH = 2_000  # records read, appended and confirmed at a time
CONFIRM_SECONDS = 60.0


class MigrationError(Exception):
    """The migration did not happen; the message says why and what to do, in one sentence."""


class Refused(MigrationError):
    """The migration cannot start as things are; nothing was changed."""


class Stopped(MigrationError):
    """The copy stopped midway: PostgreSQL is unchanged, the partition streams hold a part."""


@dataclass
class Target:
    """One partition stream and the records copied into it, in order."""

    stream: str
    old_offsets: array[int] = field(default_factory=lambda: array("q"))
    digests: array[int] = field(default_factory=lambda: array("q"))
    new_offsets: array[int] = field(default_factory=lambda: array("q"))


def migrate_partitions(settings: Settings, partitions: int, stopper: Stopper,
                       restart: bool = False) -> list[Target]:
    """Move the log of HOOKLINE_STREAM into `partitions` streams; what went where."""
    _check_settings(settings, partitions)
    check_reachable(settings)
    old = replace(settings, partitions=1)
    new = replace(settings, partitions=partitions)
    leaders = [PROJECTOR, *(consumer_name(PROJECTOR, k, partitions) for k in range(partitions)),
               SCHEDULER]
    with psycopg.connect(settings.psycopg_url, autocommit=True) as control:
        _hold_leader_locks(control, leaders)  # released when `control` closes
        with _broker(settings) as connection:
            start, end = _check_ready(control, connection, old, new, restart)
        targets = [Target(stream) for stream in new.streams]
        with _broker(settings) as connection:  # a connection per step: none idles for long
            _copy(old, connection, targets, start, end, stopper)
        _read_back(new, targets, stopper)
        _check_nothing_else_appended(settings, old.stream, end, targets)
        _hand_over(control, targets, end)
    for target in targets:
        log.info("%s holds %d records, up to offset %d", target.stream, len(target.new_offsets),
                 target.new_offsets[-1] if target.new_offsets else -1)
    log.info("moved %s into %d partitions; start every process with HOOKLINE_PARTITIONS=%d",
             old.stream, partitions, partitions)
    return targets


def _check_settings(settings: Settings, partitions: int) -> None:
    if not 2 <= partitions <= MAX_PARTITIONS:
        raise Refused(f"--to must be from 2 to {MAX_PARTITIONS}; got {partitions}")
    if settings.partitions not in (1, partitions):
        raise Refused(f"HOOKLINE_PARTITIONS is {settings.partitions}: run this with 1 (the old "
                      f"log) or {partitions} (the new one)")


@contextmanager
def _broker(settings: Settings) -> Iterator[pika.BlockingConnection]:
    connection = open_connection(settings, NAME)
    try:
        yield connection
    finally:
        with suppress(pika.exceptions.AMQPError):
            connection.close()


def _ends(connection: pika.BlockingConnection, streams: Sequence[str]) -> list[int]:
    """Each stream's last offset, peeked at all at once."""
    ends: list[int] = []
    for end in log_end_offsets(connection, streams):
        if isinstance(end, Exception):
            raise end
        ends.append(end)
    return ends


def _hold_leader_locks(control: psycopg.Connection[Any], names: Sequence[str]) -> None:
    """Each projector and the scheduler works only while it holds its lock: none can now."""
    for name in names:
        row = control.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),)).fetchone()
        if not (row and row[0]):
            raise Refused(f"a {name.split('.')[0]} is running (it holds the lock {name!r}): "
                          "stop it first")


def _check_ready(control: psycopg.Connection[Any], connection: pika.BlockingConnection,
                 old: Settings, new: Settings, restart: bool) -> tuple[int, int]:
    """(first, last) offset to copy, once everything says the old stream is fully projected."""
    if not _exists(connection, old.stream):
        raise Refused(f"there is no stream {old.stream!r} (HOOKLINE_STREAM) to move")
    _check_not_moved(control)
    end = log_end_offset(connection, old.stream)
    checkpoint = load_checkpoint(control, PROJECTOR)
    if checkpoint != end:
        raise Refused(f"the projector's checkpoint is at offset {checkpoint} but {old.stream} "
                      f"ends at offset {end}: with ingest and the scheduler stopped, let the "
                      "projector reach the end, stop it, then run this again")
    start = log_start_offset(connection, old.stream) or 0
    gone = _scalar(control, 'SELECT count(*) FROM events WHERE "offset" < %s', start)
    if gone:
        raise Refused(f"{gone} events rows are of records retention removed from {old.stream} "
                      f"(offsets below {start}), so they cannot be moved: delete those rows if "
                      "you accept losing them, then run this again")
    _prepare_targets(connection, new, restart)
    return start, end


def _check_not_moved(control: psycopg.Connection[Any]) -> None:
    moved = checkpoints.first_named(control, f"{PROJECTOR}.")
    if moved is not None:
        raise Refused(f"the log is in partitions already: checkpoint {moved!r} exists")
    try:
        partition = _scalar(control, 'SELECT min("partition") FROM events WHERE "partition" <> 0')
    except psycopg.errors.UndefinedColumn:
        raise Refused("the database's schema predates partitions: run 'hookline migrate' "
                      "first") from None
    if partition is not None:
        raise Refused(f"the log is in partitions already: events of partition {partition} exist")


def _exists(connection: pika.BlockingConnection, stream: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(stream, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    channel.close()
    return True


def _prepare_targets(connection: pika.BlockingConnection, new: Settings, restart: bool) -> None:
    """Declare the partition streams (after deleting them with --restart); each must be empty."""
    channel = connection.channel()
    try:
        if restart:
            for stream in new.streams:
                channel.queue_delete(stream)
            log.info("deleted the partition streams %s", ", ".join(new.streams))
        declare_stream(channel, new)  # with the log's arguments, as every process declares it
        channel.close()
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise Refused(f"RabbitMQ refused to declare the partition streams: {exc.reply_text}"
                      ) from None
    for stream, last in zip(new.streams, _ends(connection, new.streams), strict=True):
        if last >= 0:
            raise Refused(f"the partition stream {stream} already holds records (up to offset "
                          f"{last}): if a migration stopped midway and nothing else wrote "
                          "there, run this again with --restart to delete them first")


def _copy(old: Settings, connection: pika.BlockingConnection, targets: list[Target],
          start: int, end: int, stopper: Stopper) -> None:
    """Every record from `start` to `end`, in log order, to its partition."""
    if end < start:
        return  # an empty log: nothing to copy
    log.info("copying %s offsets %d to %d into %s", old.stream, start, end,
             ", ".join(t.stream for t in targets))
    appender = _Appender(connection)
    reader = _PropertiesReader(old, start, BATCH, NAME, stopper.is_set)
    try:
        for batch in reader.batches():
            for record in batch.records:
                if record.offset > end:
                    break  # appended after the end was read: caught by the end check after
                target = targets[_partition(record.body, len(targets))]
                appender.append(target.stream, record.body, reader.properties.pop(record.offset))
                target.old_offsets.append(record.offset)
                target.digests.append(_digest(record.body))
            appender.wait_for_confirms(at_most=BATCH)  # the next batch goes out meanwhile
            reader.ack(batch)
            if batch.last_offset >= end:
                appender.wait_for_confirms()
                return
        raise Stopped("interrupted during the copy: run this again with --restart")
    except pika.exceptions.AMQPError as exc:
        raise Stopped(f"the connection to RabbitMQ failed during the copy ({exc!r}): run this "
                      "again with --restart") from None
    finally:
        reader.close()


def _partition(body: bytes, partitions: int) -> int:
    try:
        return partition_of(decode(body).subject, partitions)
    except ValueError:
        return 0  # not an envelope: projected `rejected`, like any unreadable record, in 0


def _digest(body: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big", signed=True)


class _PropertiesReader(StreamReader):
    """A reader of the old stream that also keeps each record's AMQP properties by offset."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.properties: dict[int, pika.BasicProperties] = {}

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.properties[int(properties.headers["x-stream-offset"])] = properties
        super()._on_message(channel, method, properties, body)


class _Appender:
    """Appends on one channel, so each stream gets its records in the order given, with many
    records awaiting their confirm at a time rather than one."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        # a blocking channel waits for each confirm in turn and pika has no public pipelined
        # mode for it: the (private) channel under it pipelines
        self.channel = connection.channel()._impl
        self.published = 0
        self.unconfirmed: set[int] = set()
        self.refused = False
        ready: list[Any] = []
        self.channel.confirm_delivery(self._on_confirm, callback=ready.append)
        self._wait(lambda: bool(ready))

    def append(self, stream: str, body: bytes, properties: pika.BasicProperties) -> None:
        self.channel.basic_publish("", stream, body, _as_appended(properties))
        self.published += 1  # the channel's delivery tags count publishes from 1
        self.unconfirmed.add(self.published)

    def wait_for_confirms(self, at_most: int = 0) -> None:
        """Until no more than `at_most` records wait for their confirm."""
        self._wait(lambda: len(self.unconfirmed) <= at_most)
        if self.refused:
            raise Stopped("RabbitMQ refused to append a record to a partition stream: run "
                          "this again with --restart")

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.refused = True
        if method.multiple:
            self.unconfirmed = {tag for tag in self.unconfirmed if tag > method.delivery_tag}
        else:
            self.unconfirmed.discard(method.delivery_tag)

    def _wait(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + CONFIRM_SECONDS
        while not done():
            if self.channel.is_closed or time.monotonic() > deadline:
                raise Stopped(f"RabbitMQ did not confirm the copy within {CONFIRM_SECONDS:g} s: "
                              "run this again with --restart")
            self.connection.process_data_events(time_limit=0.1)


def _as_appended(properties: pika.BasicProperties) -> pika.BasicProperties:
    """The properties the record was appended with: without the headers a stream adds."""
    appended = copy.copy(properties)
    headers = {k: v for k, v in (properties.headers or {}).items()
               if not k.startswith("x-stream")}
    appended.headers = headers or None
    return appended


def _read_back(new: Settings, targets: list[Target], stopper: Stopper) -> None:
    """Each partition stream must hold the records copied into it; note their offsets."""
    for k, target in enumerate(targets):
        if target.old_offsets:
            _read_partition(new.partition(k), target, stopper)


def _check_nothing_else_appended(settings: Settings, old: str, end: int,
                                 targets: Sequence[Target]) -> None:
    """Each partition ends at the last record copied into it, and the old stream where the copy
    ended: nothing else appended to either meanwhile."""
    with _broker(settings) as connection:
        old_end, *ends = _ends(connection, [old, *(target.stream for target in targets)])
    for target, last in zip(targets, ends, strict=True):
        copied = target.new_offsets[-1] if target.new_offsets else -1
        if last != copied:
            raise Stopped(f"{target.stream} ends at offset {last}, not at the last record "
                          f"copied into it ({copied}), so something else appends to it: stop "
                          "it, then run this again with --restart")
    if old_end != end:
        raise Stopped(f"{old} grew past offset {end} during the copy, so ingest or the "
                      "scheduler still runs: stop them, let the projector reach the end again, "
                      "then run this with --restart")


def _read_partition(settings: Settings, target: Target, stopper: Stopper) -> None:
    count = len(target.old_offsets)
    reader = StreamReader(settings, 0, BATCH, NAME,
                          lambda: stopper.is_set() or len(target.new_offsets) >= count)
    try:
        for batch in reader.batches():
            for record in batch.records[:count - len(target.new_offsets)]:
                if _digest(record.body) != target.digests[len(target.new_offsets)]:
                    raise Stopped(f"{target.stream} offset {record.offset} is not the record "
                                  "copied there: run this again with --restart")
                target.new_offsets.append(record.offset)
            reader.ack(batch)
    finally:
        reader.close()
    if len(target.new_offsets) < count:
        raise Stopped(f"interrupted while reading {target.stream} back: run this again with "
                      "--restart")


def _hand_over(control: psycopg.Connection[Any], targets: Sequence[Target], end: int) -> None:
    """Checkpoints and rows to the partitions, in one transaction."""
    log.info("read back %d records; handing the checkpoints and rows over to the partitions",
             sum(len(t.new_offsets) for t in targets))
    try:
        with control.transaction():
            control.execute("CREATE TEMP TABLE moved (old_offset bigint PRIMARY KEY, "
                            "\"partition\" smallint NOT NULL, new_offset bigint NOT NULL) "
                            "ON COMMIT DROP")
            with control.cursor() as cursor, cursor.copy("COPY moved FROM STDIN") as rows:
                for k, target in enumerate(targets):
                    for old, new in zip(target.old_offsets, target.new_offsets, strict=True):
                        rows.write_row((old, k, new))
            control.execute("ANALYZE moved")
            _renumber_events(control)
            for table, key in (("transactions", ("transaction_id", "source")),
                               ("bookings", ("reference",))):
                _renumber_last_offsets(control, table, key)
            _move_checkpoints(control, targets, end)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Stopped(f"PostgreSQL refused the handover ({first}) and is unchanged: run this "
                      "again with --restart") from None


def _renumber_events(control: psycopg.Connection[Any]) -> None:
    """Each events row to its record's (partition, offset). Through negative offsets, because
    a row's new key may still be another's old one and the primary key is checked row by row;
    an unreadable record's id names its offset, so it is renamed the same way."""
    control.execute(
        'UPDATE events AS e SET "offset" = -1 - m.new_offset, "partition" = m."partition", '
        "id = CASE WHEN e.source = 'unknown' AND e.id = 'unreadable:' || e.\"offset\" "
        "THEN 'unreadable:moving:' || m.new_offset ELSE e.id END "
        'FROM moved AS m WHERE e."partition" = 0 AND e."offset" = m.old_offset')
    left = _scalar(control, 'SELECT count(*) FROM events WHERE "offset" >= 0')
    if left:
        raise Stopped(f"{left} events rows name offsets that hold no record of the old stream: "
                      "nothing was changed")
    control.execute(
        'UPDATE events SET "offset" = -1 - "offset", id = CASE WHEN id LIKE '
        "'unreadable:moving:%' THEN 'unreadable:' || (-1 - \"offset\") ELSE id END "
        'WHERE "offset" < 0')


def _renumber_last_offsets(control: psycopg.Connection[Any], table: str,
                           key: Sequence[str]) -> None:
    """A row's last_offset names the record that last changed it: now its offset in its
    partition (-1 for a record retention removed: before every record of the partitions)."""
    same = sql.SQL(" AND ").join(sql.SQL("o.{0} = t.{0}").format(sql.Identifier(c)) for c in key)
    control.execute(sql.SQL(
        "UPDATE {table} AS t SET last_offset = coalesce(m.new_offset, -1) "
        "FROM {table} AS o LEFT JOIN moved AS m ON m.old_offset = o.last_offset "
        "WHERE {same}").format(table=sql.Identifier(table), same=same))


def _move_checkpoints(control: psycopg.Connection[Any], targets: Sequence[Target],
                      end: int) -> None:
    """`projector.K` at the last record copied into K; none for an empty partition, which its
    projector reads from the start, as it does when no checkpoint exists."""
    gone = checkpoints.remove(control, PROJECTOR, end)
    if gone != (1 if end >= 0 else 0):
        raise Stopped(f"the projector's checkpoint left offset {end} during the copy: nothing "
                      "was changed")
    checkpoints.add(control, [(consumer_name(PROJECTOR, k, len(targets)), target.new_offsets[-1])
                              for k, target in enumerate(targets) if target.new_offsets])


def _scalar(control: psycopg.Connection[Any], query: LiteralString, *params: Any) -> Any:
    row = control.execute(query, params).fetchone()
    return None if row is None else row[0]
