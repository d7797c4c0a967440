"""The stream on the real broker: declaration, confirmed publishing, reading by offset, gaps."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from hookline.config import Settings
from hookline.log.envelope import utcnow
from hookline.log.publisher import Publisher
from hookline.log.reader import Batch, OffsetGap, StreamReader
from hookline.log.reader_process import ReaderProcess
from hookline.log.topology import (
    declare_stream,
    ensure_stream,
    log_end_offset,
    log_end_offsets,
    open_connection,
)
from tests.conftest import AMQP_URL
from tests.processes import NotYet, eventually


@pytest.fixture
def log_settings(stream: str) -> Settings:
    return Settings(amqp_url=AMQP_URL, stream=stream, publish_timeout=20)


@pytest.fixture
def publisher(log_settings: Settings) -> Iterator[Publisher]:
    running = Publisher(log_settings, name="test")
    running.start()
    assert running.wait_ready(20), "the publisher did not connect"
    yield running
    running.stop()


def publish_all(publisher: Publisher, count: int, prefix: str = "r") -> list[str]:
    ids = [f"{prefix}-{n}" for n in range(count)]
    for message_id in ids:
        publisher.publish(publisher._settings.stream, message_id, message_id.encode(), utcnow())
    return ids


def read_raw(settings: Settings, count: int, start: int | str = 0,
             timeout: float = 20) -> list[tuple[int, str | None, bytes]]:
    """(offset, message_id, body) of `count` records from `start`, read with plain pika."""
    connection = open_connection(settings, "test-read")
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    found: list[tuple[int, str | None, bytes]] = []

    def on_message(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
        found.append((int(properties.headers["x-stream-offset"]), properties.message_id, body))
        channel.basic_ack(method.delivery_tag)

    channel.basic_consume(settings.stream, on_message, arguments={"x-stream-offset": start})
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    _close(connection)
    return found


def _close(connection: pika.BlockingConnection) -> None:
    # closing a stream consumer's channel makes the broker close the connection: that is fine
    with suppress(pika.exceptions.AMQPError):
        connection.close()


def first_offset(settings: Settings) -> int:
    records = read_raw(settings, 1, start="first", timeout=5)
    if not records:
        raise NotYet("the stream is empty")
    return records[0][0]


def read_batches(settings: Settings, start: int, want: int, batch_size: int,
                 on_batch: Callable[[StreamReader, Batch], bool] | None = None,
                 timeout: float = 20) -> tuple[list[Batch], StreamReader]:
    """Batches from a StreamReader until `want` records came (or on_batch says stop)."""
    deadline = time.monotonic() + timeout
    got: list[Batch] = []
    stop = [False]
    reader = StreamReader(settings, start, batch_size, "test",
                          lambda: stop[0] or time.monotonic() > deadline, idle_seconds=0.2)
    try:
        for batch in reader.batches():
            got.append(batch)
            keep_going = on_batch(reader, batch) if on_batch else True
            reader.ack(batch)
            if not keep_going or sum(len(b.records) for b in got) >= want:
                stop[0] = True
    finally:
        reader.close()
    return got, reader


def offsets(batches: list[Batch]) -> list[int]:
    return [record.offset for batch in batches for record in batch.records]


# -- declaration --------------------------------------------------------------------------------

def test_declaring_the_stream_twice_with_the_same_arguments_is_a_no_op(
        log_settings: Settings) -> None:
    ensure_stream(log_settings)
    ensure_stream(log_settings)
    connection = open_connection(log_settings, "test")
    try:
        channel = connection.channel()
        declare_stream(channel, log_settings)
        other = replace(log_settings, stream_max_bytes=log_settings.stream_max_bytes + 1)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="inequivalent arg"):
            declare_stream(channel, other)  # so the first declaration's arguments did stick
        assert log_end_offset(connection, log_settings.stream) == -1
    finally:
        _close(connection)


def test_the_stream_is_declared_with_its_replica_count_when_one_is_set(
        log_settings: Settings) -> None:
    replicated = replace(log_settings, stream_replicas=3)  # a single node takes what it has
    ensure_stream(replicated)
    connection = open_connection(log_settings, "test")
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                           match="inequivalent arg 'x-initial-cluster-size'"):
            declare_stream(connection.channel(), log_settings)
    finally:
        _close(connection)


def test_every_partition_stream_is_declared(log_settings: Settings) -> None:
    partitioned = replace(log_settings, partitions=3)
    ensure_stream(partitioned)
    connection = open_connection(log_settings, "test")
    try:
        for stream in partitioned.streams:  # a passive declaration fails for a missing queue
            connection.channel().queue_declare(stream, passive=True)
    finally:
        _close(connection)


def test_the_ends_of_several_streams_are_read_together_each_its_own(
        log_settings: Settings) -> None:
    partitioned = replace(log_settings, partitions=3)
    ensure_stream(partitioned)
    connection = open_connection(log_settings, "test")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for n in range(3):
            channel.basic_publish("", partitioned.streams[0], b"{}",
                                  pika.BasicProperties(message_id=f"zero-{n}"))
        channel.basic_publish("", partitioned.streams[2], b"{}",
                              pika.BasicProperties(message_id="two"))
        streams = [*partitioned.streams, f"{log_settings.stream}.missing"]
        *ends, missing = log_end_offsets(connection, streams)
        assert ends == [2, -1, 0]
        assert isinstance(missing, pika.exceptions.ChannelClosedByBroker)
        assert log_end_offset(connection, partitioned.streams[0]) == 2  # still usable
    finally:
        _close(connection)


# -- publishing ---------------------------------------------------------------------------------

def test_a_publisher_shared_by_32_threads_confirms_every_record(
        log_settings: Settings, publisher: Publisher) -> None:
    per_thread = 25
    with ThreadPoolExecutor(32) as pool:
        batches = list(pool.map(lambda t: publish_all(publisher, per_thread, f"t{t}"),
                                range(32)))
    expected = {message_id for ids in batches for message_id in ids}
    assert len(expected) == 32 * per_thread
    assert publisher.inflight() == 0

    records = read_raw(log_settings, len(expected), timeout=5)
    assert Counter(message_id for _, message_id, _ in records) == Counter(expected)
    assert all(body.decode() == message_id for _, message_id, body in records)
    assert [offset for offset, _, _ in records] == list(range(len(expected)))


def test_a_record_is_in_the_log_as_soon_as_publish_returns(
        log_settings: Settings, publisher: Publisher) -> None:
    publisher.publish(log_settings.stream, "only-one", b"{}", utcnow())
    connection = open_connection(log_settings, "test")
    try:
        assert log_end_offset(connection, log_settings.stream) == 0
    finally:
        _close(connection)


# -- reading ------------------------------------------------------------------------------------

def test_the_reader_starts_exactly_at_the_given_offset(log_settings: Settings,
                                                       publisher: Publisher) -> None:
    ids = publish_all(publisher, 60)
    got, _ = read_batches(log_settings, start=17, want=60 - 17, batch_size=10)
    assert offsets(got)[0] == 17
    assert offsets(got) == list(range(17, 60))
    assert all(len(batch.records) <= 10 for batch in got)
    bodies = [record.body.decode() for batch in got for record in batch.records]
    assert bodies == ids[17:]


def test_a_new_reader_continues_after_the_last_ack_without_loss_or_repetition(
        log_settings: Settings, publisher: Publisher) -> None:
    publish_all(publisher, 100)
    first, reader = read_batches(log_settings, start=0, want=35, batch_size=7)
    assert offsets(first) == list(range(35))
    assert reader.next_offset == 35

    publish_all(publisher, 20, prefix="later")
    rest, _ = read_batches(log_settings, start=reader.next_offset, want=85, batch_size=7)
    assert offsets(first) + offsets(rest) == list(range(120))


def test_a_reader_at_the_end_of_the_log_waits_for_new_records(
        log_settings: Settings, publisher: Publisher) -> None:
    publish_all(publisher, 5)

    def publish_more(_reader: StreamReader, batch: Batch) -> bool:
        if batch.last_offset == 4:
            publish_all(publisher, 3, prefix="new")
        return True

    got, _ = read_batches(log_settings, start=0, want=8, batch_size=100, on_batch=publish_more)
    assert offsets(got) == list(range(8))


# -- gaps ---------------------------------------------------------------------------------------

@pytest.fixture
def truncated(stream: str) -> Settings:
    """A stream whose retention has already dropped its first segment."""
    settings = Settings(amqp_url=AMQP_URL, stream=stream, stream_max_bytes=3000,
                        stream_max_segment_bytes=1000)
    ensure_stream(settings)
    connection = open_connection(settings, "test-fill")
    channel = connection.channel()
    channel.confirm_delivery()

    def rolled() -> int:
        for n in range(20):  # each attempt appends more, so retention has segments to drop
            channel.basic_publish("", stream, b"x" * 200,
                                  pika.BasicProperties(message_id=f"fill-{n}"))
        first = first_offset(settings)
        assert first > 0, "retention has not dropped a segment yet"
        return first

    try:
        eventually(rolled, timeout=30, interval=0.2)
    finally:
        _close(connection)
    return settings


def test_a_reader_whose_offset_was_dropped_raises_offset_gap(truncated: Settings) -> None:
    first = first_offset(truncated)
    with pytest.raises(OffsetGap, match=f"starts at offset {first} but offset 0 was expected"):
        read_batches(truncated, start=0, want=1, batch_size=10)


def test_with_accept_gaps_the_reader_skips_to_the_first_available_offset(
        truncated: Settings) -> None:
    first = first_offset(truncated)
    got, reader = read_batches(replace(truncated, accept_gaps=True), start=0, want=1,
                               batch_size=10)
    assert offsets(got)[0] == first
    assert offsets(got) == sorted(set(offsets(got)))
    assert reader.next_offset == offsets(got)[-1] + 1


def test_a_reader_starting_on_an_offset_without_a_record_reports_no_gap(
        truncated: Settings) -> None:
    held = [offset for offset, _, _ in read_raw(truncated, 40, start="first", timeout=5)]
    holes = sorted(set(range(held[0], held[-1])) - set(held))
    assert holes, "every offset holds a record: nothing to show"
    got, _ = read_batches(truncated, start=holes[0], want=1, batch_size=10)
    assert offsets(got)[0] == holes[0] + 1


# -- reading in a process of its own (the projector's) -------------------------------------------

def read_in_process(settings: Settings, start: int, want: int, batch_size: int,
                    timeout: float = 20) -> tuple[list[Batch], ReaderProcess]:
    """Batches handed over by a ReaderProcess until `want` records came; closed after."""
    deadline = time.monotonic() + timeout
    got: list[Batch] = []
    reader = ReaderProcess(settings, start, batch_size, "test",
                           lambda: sum(len(b.records) for b in got) >= want
                           or time.monotonic() > deadline)
    try:
        got.extend(reader.batches())
    finally:
        reader.close()
    return got, reader


def test_the_reading_process_hands_over_every_record_from_its_start_in_order(
        log_settings: Settings, publisher: Publisher) -> None:
    ids = publish_all(publisher, 60)
    got, reader = read_in_process(log_settings, start=17, want=60 - 17, batch_size=10)
    assert offsets(got) == list(range(17, 60))
    assert all(len(batch.records) <= 10 for batch in got)
    assert [record.body.decode() for batch in got for record in batch.records] == ids[17:]
    assert reader._process.exitcode == 0, "closing it must stop it, not kill it"


def test_the_reading_process_stops_promptly_when_closed_on_an_idle_log(
        log_settings: Settings, publisher: Publisher) -> None:
    publish_all(publisher, 1)
    got: list[Batch] = []
    reader = ReaderProcess(log_settings, 0, 10, "test", lambda: bool(got))
    got.extend(reader.batches())  # the one record came: it waits on an idle log now
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < 3
    assert reader._process.exitcode == 0


def test_a_gap_met_by_the_reading_process_is_raised_in_the_projector(
        truncated: Settings) -> None:
    first = first_offset(truncated)
    with pytest.raises(OffsetGap, match=f"starts at offset {first} but offset 0 was expected"):
        read_in_process(truncated, start=0, want=1, batch_size=10)


def test_the_reading_process_ends_when_its_parent_is_killed(log_settings: Settings) -> None:
    ensure_stream(log_settings)
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANING_PARENT, log_settings.amqp_url, log_settings.stream],
        stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    eventually(lambda: _gone(child), timeout=10, interval=0.2)


ORPHANING_PARENT = """
import signal, sys
from hookline.config import Settings
from hookline.log.reader_process import ReaderProcess
reader = ReaderProcess(Settings(amqp_url=sys.argv[1], stream=sys.argv[2]), 0, 10, "orphan",
                       lambda: False)
print(reader._process.pid, flush=True)
signal.pause()  # until the test kills this parent
"""


def _gone(pid: int) -> None:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return
    assert state == "Z", f"process {pid} is still running (state {state})"


def test_the_log_end_is_read_within_a_bound_while_records_keep_arriving(
        log_settings: Settings) -> None:
    import threading

    ensure_stream(log_settings)
    stop = threading.Event()

    def append_steadily() -> None:
        connection = open_connection(log_settings, "writer")
        channel = connection.channel()
        while not stop.is_set():
            for _ in range(20):
                channel.basic_publish("", log_settings.stream, b"{}")
            connection.process_data_events(time_limit=0.005)
        connection.close()

    writer = threading.Thread(target=append_steadily)
    writer.start()
    connection = open_connection(log_settings, "peek")
    try:
        eventually(lambda: _enough(log_end_offset(connection, log_settings.stream) >= 2_000))
        readings = []
        for _ in range(5):  # the same connection survives repeated peeks under load
            started = time.monotonic()
            readings.append(log_end_offset(connection, log_settings.stream))
            assert time.monotonic() - started < 2.0
        assert readings == sorted(readings)
        assert connection.is_open
    finally:
        stop.set()
        writer.join()
        _close(connection)


def _enough(appended: bool) -> None:
    if not appended:
        raise NotYet("the writer has not appended enough yet")
