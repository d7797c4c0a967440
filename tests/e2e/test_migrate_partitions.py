"""`hookline migrate-partitions`: a one-stream log moved into two partitions while the pipeline
is stopped, then the pipeline restarted on the partitions, all through the real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import pika
import pika.exceptions
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from hookline.config import Settings, load_settings, partition_of
from hookline.log.envelope import decode
from hookline.log.topology import declare_stream, log_end_offset, open_connection
from tests.conftest import AMQP_URL
from tests.e2e.test_bookings import SECRET, booking, post_booking, post_payment
from tests.mailbox import Mailbox
from tests.processes import Pipeline, eventually, process_env, running_pipeline, scalar

GARBAGE = b"not an envelope"
Row = dict[str, Any]


@dataclass(frozen=True)
class Stored:
    """A record as a stream holds it: where, the bytes, and the properties it was sent with."""

    offset: int
    body: bytes
    message_id: str | None
    timestamp: int | None
    content_type: str | None

    @property
    def sent(self) -> tuple[bytes, str | None, int | None, str | None]:
        return self.body, self.message_id, self.timestamp, self.content_type


@pytest.fixture
def shop_env(env: dict[str, str], mailbox: Mailbox) -> dict[str, str]:
    # segments of a few records: a segment boundary takes an offset, so offsets have holes
    return {**env, "HOOKLINE_BOOKINGS_SECRETS": SECRET, "HOOKLINE_SMTP_URL": mailbox.url,
            "HOOKLINE_MAIL_BACKOFF_BASE": "0.2", "HOOKLINE_STREAM_MAX_SEGMENT_BYTES": "3000"}


def hookline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookline", *args],
                          env=process_env(env), capture_output=True, text=True, timeout=120)


def read_stream(stream: str) -> list[Stored]:
    """Every record of `stream`, read with plain pika up to the end the broker reports."""
    connection = open_connection(Settings(amqp_url=AMQP_URL, stream=stream), "test-read")
    found: list[Stored] = []
    try:
        end = log_end_offset(connection, stream)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)

        def on_message(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
            found.append(Stored(int(properties.headers["x-stream-offset"]), body,
                                properties.message_id, properties.timestamp,
                                properties.content_type))
            channel.basic_ack(method.delivery_tag)

        channel.basic_consume(stream, on_message, arguments={"x-stream-offset": 0})
        deadline = time.monotonic() + 20
        while end >= 0 and (not found or found[-1].offset < end) and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
    finally:
        with suppress(pika.exceptions.AMQPError):
            connection.close()
    return found


def stream_exists(stream: str) -> bool:
    connection = open_connection(Settings(amqp_url=AMQP_URL, stream=stream), "test-check")
    try:
        connection.channel().queue_declare(stream, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        with suppress(pika.exceptions.AMQPError):
            connection.close()


def append_directly(env: dict[str, str], partitions: int, partition: int, body: bytes) -> None:
    """A record no ingress wrote, appended to one of the log's streams (declared as hookline
    declares them, with `partitions` partitions)."""
    settings = load_settings({**env, "HOOKLINE_PARTITIONS": str(partitions)})
    connection = open_connection(settings, "test-append")
    channel = connection.channel()
    declare_stream(channel, settings)
    channel.confirm_delivery()
    channel.basic_publish("", settings.streams[partition], body,
                          pika.BasicProperties(message_id="stray"))
    connection.close()


def partition_of_record(body: bytes) -> int:
    try:
        return partition_of(decode(body).subject, 2)
    except ValueError:
        return 0


def checkpoints(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT consumer, last_offset FROM consumer_offsets").fetchall())


def projected_to_the_end(db: psycopg.Connection, streams: dict[str, str]) -> None:
    """Each consumer's checkpoint is at the end of its stream (its stream has records)."""
    assert checkpoints(db) == {consumer: read_stream(stream)[-1].offset
                               for consumer, stream in streams.items()}


def settled(db: psycopg.Connection, mailbox: Mailbox) -> None:
    sent: dict[str, int] = dict(db.execute(
        "SELECT status, count(*) FROM email_outbox GROUP BY status").fetchall())
    assert set(sent) == {"sent"}, sent
    assert len(mailbox.received()) == sent["sent"]


def rows(db: psycopg.Connection, query: LiteralString) -> list[Row]:
    with db.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query).fetchall()


def events_by_place(db: psycopg.Connection) -> dict[tuple[int, int], Row]:
    return {(r["partition"], r["offset"]): r for r in rows(
        db, 'SELECT "partition", "offset", id, source, type, subject, received_at, outcome, '
            "error, payload::text AS payload, projected_at FROM events")}


def keyed(db: psycopg.Connection, table: str, key: str) -> dict[str, Row]:
    with db.cursor(row_factory=dict_row) as cursor:
        found = cursor.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        return {r[key]: r for r in found}


def traffic_before(shop: Pipeline) -> None:
    """Bookings and their payments (some sent twice), payments of no booking, one unreadable
    record; BK-05 … BK-07 stay unpaid."""
    for n in range(8):
        ref = f"BK-{n:02d}"
        post_booking(shop, booking(ref, f"guest{n}@example.com", f"Guest {n}"),
                     msg_id=f"msg-{ref}", times=2 if n < 2 else 1)
    for n in range(4):
        post_payment(shop, f"tx-{n:02d}", f"BK-{n:02d}", "succeeded", times=2 if n == 0 else 1)
    post_payment(shop, "tx-04", "BK-04", "failed", reason="card declined")
    append_directly(shop.env, 1, 0, GARBAGE)
    for n in range(5):
        post_payment(shop, f"tx-solo-{n}", None, "succeeded", amount=f"1{n}.00",
                     times=2 if n == 0 else 1)


def test_a_log_moved_into_two_partitions_keeps_every_record_once_in_subject_order(
        shop_env: dict[str, str], stream: str, db: psycopg.Connection, mailbox: Mailbox,
        tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with running_pipeline(shop_env, tmp_path / "one", parts=("ingest", "projector")) as shop:
        shop.start_mailer()
        traffic_before(shop)
        eventually(lambda: projected_to_the_end(db, {"projector": stream}), timeout=30)
        eventually(lambda: settled(db, mailbox), timeout=30)
    old = read_stream(stream)
    events_before = {offset: row for (_, offset), row in events_by_place(db).items()}
    tables_before = {"transactions": keyed(db, "transactions", "transaction_id"),
                     "bookings": keyed(db, "bookings", "reference")}
    assert len(events_before) == len(old) == 23

    # a run that stopped midway left a record in a partition: refused, then redone with --restart
    append_directly(shop_env, 2, 1, old[0].body)
    refused = hookline(shop_env, "migrate-partitions", "--to", "2")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith(
        f"hookline: the partition stream {stream}.1 already holds records"), refused.stderr
    assert "--restart" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert checkpoints(db) == {"projector": old[-1].offset}
    done = hookline({**shop_env, "HOOKLINE_PARTITIONS": "2"},
                    "migrate-partitions", "--to", "2", "--restart")
    assert done.returncode == 0, done.stderr
    again = hookline({**shop_env, "HOOKLINE_PARTITIONS": "2"},
                     "migrate-partitions", "--to", "2", "--restart")  # deletes nothing now
    assert again.returncode == 1
    assert again.stderr.splitlines()[-1] == (
        "hookline: the log is in partitions already: checkpoint 'projector.0' exists")

    parts = [read_stream(f"{stream}.{k}") for k in range(2)]
    moved = check_the_copy(old, parts)
    check_the_handover(db, old, parts, moved, events_before, tables_before)

    events_after = events_by_place(db)
    tables_after = {"transactions": keyed(db, "transactions", "transaction_id"),
                    "bookings": keyed(db, "bookings", "reference")}
    emails_before = len(mailbox.received())
    env = {**shop_env, "HOOKLINE_PARTITIONS": "2"}
    with running_pipeline(env, tmp_path / "two", parts=("ingest", "projector")) as shop:
        shop.start_mailer()
        post_payment(shop, "tx-05", "BK-05", "succeeded")  # for a booking from before
        post_payment(shop, "tx-00", "BK-00", "succeeded")  # a duplicate from before
        post_booking(shop, booking("BK-00", "guest0@example.com", "Guest 0"), msg_id="msg-BK-00")
        post_booking(shop, booking("BK-NEW", "new@example.com", "New Guest"), msg_id="msg-new")
        post_payment(shop, "tx-new", "BK-NEW", "succeeded")
        streams = {f"projector.{k}": f"{stream}.{k}" for k in range(2)}
        eventually(lambda: projected_to_the_end(db, streams), timeout=30)
        eventually(lambda: settled(db, mailbox), timeout=30)
        assert scalar(db, "SELECT count(*) FROM events") == len(old) + 5
    check_after_restart(db, mailbox, emails_before, events_after, tables_after)
    assert [r.sent for r in read_stream(stream)] == [r.sent for r in old]  # left as it was


def check_the_copy(old: list[Stored], parts: list[list[Stored]]) -> dict[int, tuple[int, int]]:
    """Each partition holds exactly the old records of its subjects, in the old order, sent
    as they were; returns each old offset's new (partition, offset)."""
    for k, part in enumerate(parts):
        assert [r.sent for r in part] == [r.sent for r in old if partition_of_record(r.body) == k]
    assert len(parts[0]) + len(parts[1]) == len(old)
    assert parts[0]
    assert parts[1]
    assert any(part[-1].offset >= len(part) for part in parts)  # new offsets are not 0, 1, 2 …
    assert [r.body for r in parts[0] if r.body == GARBAGE] == [GARBAGE]
    subjects = Counter(decode(r.body).subject for r in old if r.body != GARBAGE)
    assert subjects["BK-00"] == 4  # the booking and its payment, each twice: one partition
    placed = iter(sorted((partition_of_record(r.body), r.offset) for r in old))
    moved: dict[int, tuple[int, int]] = {}
    for k, part in enumerate(parts):
        for record in part:
            moved[next(placed)[1]] = (k, record.offset)
    return moved


def check_the_handover(db: psycopg.Connection, old: list[Stored], parts: list[list[Stored]],
                       moved: dict[int, tuple[int, int]], events_before: dict[int, Row],
                       tables_before: dict[str, dict[str, Row]]) -> None:
    """Checkpoints at each partition's end; each events row at its record's new place, else
    unchanged; last_offset renumbered the same way."""
    assert checkpoints(db) == {f"projector.{k}": part[-1].offset for k, part in enumerate(parts)}
    events = events_by_place(db)
    assert len(events) == len(old)
    for (k, offset), row in events.items():
        body = next(r.body for r in parts[k] if r.offset == offset)
        assert row["id"] == (f"unreadable:{offset}" if body == GARBAGE else decode(body).id)
    for offset, before in events_before.items():
        after = events[moved[offset]]
        unchanged = {c: v for c, v in before.items() if c not in ("partition", "offset", "id")}
        assert {c: after[c] for c in unchanged} == unchanged
    for table, key in (("transactions", "transaction_id"), ("bookings", "reference")):
        after_rows = keyed(db, table, key)
        assert after_rows.keys() == tables_before[table].keys()
        for name, before in tables_before[table].items():
            assert after_rows[name] == {**before, "last_offset": moved[before["last_offset"]][1]}


def check_after_restart(db: psycopg.Connection, mailbox: Mailbox, emails_before: int,
                        events_before: dict[tuple[int, int], Row],
                        tables_before: dict[str, dict[str, Row]]) -> None:
    """The new records projected once, no email twice, every earlier row as it was."""
    outcomes: dict[str, str] = dict(db.execute(
        "SELECT id, string_agg(outcome, ',' ORDER BY outcome) FROM events "
        "WHERE id IN ('transactions:tx-05:succeeded', 'transactions:tx-00:succeeded', "
        "'bookings:msg-BK-00', 'bookings:msg-new', 'transactions:tx-new:succeeded') "
        "GROUP BY id").fetchall())
    assert outcomes == {"transactions:tx-05:succeeded": "applied",
                        "transactions:tx-new:succeeded": "applied",
                        "bookings:msg-new": "applied",
                        "transactions:tx-00:succeeded": "applied,duplicate,duplicate",
                        "bookings:msg-BK-00": "applied,duplicate,duplicate"}
    assert scalar(db, "SELECT status FROM bookings WHERE reference = 'BK-05'") == "confirmed"
    assert scalar(db, "SELECT status FROM bookings WHERE reference = 'BK-NEW'") == "confirmed"
    received = mailbox.received()
    assert len(received) == emails_before + 3  # BK-05 paid; BK-NEW created and paid
    assert Counter((m["To"], m["Subject"]) for m in received).most_common(1)[0][1] == 1
    assert [m["To"] for m in received[emails_before:]].count("guest5@example.com") == 1
    events = events_by_place(db)
    assert {place: events[place] for place in events_before} == events_before
    changed = {"BK-05", "BK-NEW", "tx-05", "tx-new"}
    for table, key in (("transactions", "transaction_id"), ("bookings", "reference")):
        now = {k: v for k, v in keyed(db, table, key).items() if k not in changed}
        assert now == {k: v for k, v in tables_before[table].items() if k not in changed}


def test_refused_while_the_projector_is_behind_or_still_running(
        env: dict[str, str], stream: str, db: psycopg.Connection, tmp_path: Path) -> None:
    with running_pipeline(env, tmp_path, parts=("ingest",)) as pipeline:
        for n in range(3):
            assert pipeline.post("transactions", {
                "transaction_id": f"tx-{n}", "source_account": "a", "destination_account": "b",
                "amount": "1.00", "currency": "EUR"}).status_code == 202
        behind = hookline(env, "migrate-partitions", "--to", "2")
        assert behind.returncode == 1
        assert behind.stderr.splitlines()[-1] == (
            f"hookline: the projector's checkpoint is at offset -1 but {stream} ends at offset "
            "2: with ingest and the scheduler stopped, let the projector reach the end, stop "
            "it, then run this again"), behind.stderr
        assert "Traceback" not in behind.stderr

        pipeline.start_projector()
        eventually(lambda: projected_to_the_end(db, {"projector": stream}), timeout=30)
        running = hookline(env, "migrate-partitions", "--to", "2")
        assert running.returncode == 1
        assert running.stderr.splitlines()[-1] == (
            "hookline: a projector is running (it holds the lock 'projector'): stop it first")
    assert not stream_exists(f"{stream}.0")
    assert not stream_exists(f"{stream}.1")
    assert checkpoints(db) == {"projector": 2}
