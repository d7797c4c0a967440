"""The operators' view of a log in two partitions, through the real projector, API and CLI:
the end of each stream, each partition's projector's lag behind its own stream, the events
paged across both partitions, one event found by its offset and partition, and `events tail`
reading both streams."""

from __future__ import annotations

import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from hookline.config import Settings, load_settings, partition_of
from hookline.log.envelope import encode, utcnow
from hookline.log.publisher import Publisher
from tests.e2e.test_operator_api import walk
from tests.processes import Pipeline, eventually, process_env, running_pipeline

PARTITIONS = 2


@pytest.fixture
def partitioned(env: dict[str, str]) -> dict[str, str]:
    return {**env, "HOOKLINE_PARTITIONS": str(PARTITIONS)}


@pytest.fixture
def publisher(partitioned: dict[str, str]) -> Iterator[Publisher]:
    running = Publisher(load_settings(partitioned), name="test")
    running.start()
    assert running.wait_ready(10)
    yield running
    running.stop()


def subjects(partition: int) -> Iterator[str]:
    """Booking references whose records go to this partition."""
    every = (f"BK-PART-{i}" for i in itertools.count())
    return (s for s in every if partition_of(s, PARTITIONS) == partition)


def publish(publisher: Publisher, partition: int, count: int, tag: str) -> list[str]:
    """`count` records whose subjects hash to `partition`; their ids, in log order."""
    settings: Settings = publisher._settings
    ids = []
    for n, subject in zip(range(count), subjects(partition), strict=False):
        record_id = f"bookings:{tag}-{partition}-{n}"
        stream = settings.stream_for(subject)
        assert stream == settings.streams[partition]
        body = encode(record_id, "bookings", "booking.noted", subject, utcnow(),
                      orjson.dumps({"reference": subject, "n": n}))
        publisher.publish(stream, record_id, body, utcnow())
        ids.append(record_id)
    return ids


def checkpoints(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT consumer, last_offset FROM consumer_offsets").fetchall())


def projected(db: psycopg.Connection, wanted: dict[str, int]) -> None:
    assert {k: v for k, v in checkpoints(db).items() if k in wanted} == wanted


def hookline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookline", *args],
                          env=process_env(env), capture_output=True, text=True, timeout=60)


def test_status_shows_each_streams_end_and_each_projectors_lag_behind_its_own_stream(
        partitioned: dict[str, str], publisher: Publisher, db: psycopg.Connection,
        stream: str, tmp_path: Path) -> None:
    publish(publisher, 0, 4, "a")
    publish(publisher, 1, 9, "a")
    with running_pipeline(partitioned, tmp_path, parts=("projector", "api")) as pipeline:
        eventually(lambda: projected(db, {"projector.0": 3, "projector.1": 8}), 30)
        assert pipeline.processes["projector"].stop() == 0
        publish(publisher, 0, 2, "b")  # partition 0 ends at 5 now, 2 behind its checkpoint
        db.execute("INSERT INTO consumer_offsets VALUES ('projector', 3), ('rebuild', 7)")
        served = pipeline.get("/v1/status").json()
        printed = hookline(partitioned, "status", "--json")
        text = hookline(partitioned, "status")
    assert printed.returncode == 0, printed.stderr
    assert served["log"] == {"stream": stream, "end_offset": None, "error": None}
    assert served["partitions"] == [
        {"partition": 0, "stream": f"{stream}.0", "end_offset": 5, "error": None,
         "consumer": "projector.0"},
        {"partition": 1, "stream": f"{stream}.1", "end_offset": 8, "error": None,
         "consumer": "projector.1"}]
    # projector.0 against stream 1 would be 8 - 3 = 5 behind; `projector` reads no partition
    assert served["consumers"] == [
        {"consumer": "projector", "checkpoint": 3, "lag": None},
        {"consumer": "projector.0", "checkpoint": 3, "lag": 2},
        {"consumer": "projector.1", "checkpoint": 8, "lag": 0},
        {"consumer": "rebuild", "checkpoint": 7, "lag": None}]
    assert json.loads(printed.stdout) == served
    lines = text.stdout.splitlines()
    assert f"partition 0  {stream}.0: end offset 5" in lines
    assert f"partition 1  {stream}.1: end offset 8" in lines
    assert [line.split() for line in lines if line.startswith("projector")] == [
        ["projector", "3", "?"], ["projector.0", "3", "2"], ["projector.1", "8", "0"]]


def test_the_events_list_pages_across_both_partitions_and_finds_an_event_by_its_partition(
        partitioned: dict[str, str], publisher: Publisher, db: psycopg.Connection,
        tmp_path: Path) -> None:
    first = publish(publisher, 0, 7, "a")
    second = publish(publisher, 1, 5, "a")
    with running_pipeline(partitioned, tmp_path, parts=("projector", "api")) as pipeline:
        eventually(lambda: projected(db, {"projector.0": 6, "projector.1": 4}), 30)
        rows = db.execute('SELECT "offset", "partition", id FROM events').fetchall()
        assert sorted(rows) == sorted([(n, 0, i) for n, i in enumerate(first)]
                                      + [(n, 1, i) for n, i in enumerate(second)])
        newest_first = sorted(rows, reverse=True)
        for limit in (1, 2, 5, 12):
            walked = walk(pipeline, "/v1/events", {}, limit)
            assert [(e["offset"], e["partition"], e["id"]) for e in walked] == newest_first
        only = walk(pipeline, "/v1/events", {"partition": 1}, 2)
        assert [(e["offset"], e["partition"]) for e in only] == [
            (n, 1) for n in range(4, -1, -1)]
        assert_found_by_partition(pipeline, first, second)


def assert_found_by_partition(pipeline: Pipeline, first: list[str], second: list[str]) -> None:
    zero, one = pipeline.get("/v1/events/0?partition=0"), pipeline.get("/v1/events/0?partition=1")
    assert (zero.status_code, one.status_code) == (200, 200)
    assert (zero.json()["partition"], zero.json()["id"]) == (0, first[0])
    assert (one.json()["partition"], one.json()["id"]) == (1, second[0])
    assert one.json()["payload"] == {"reference": one.json()["subject"], "n": 0}
    assert pipeline.get("/v1/events/0").json()["id"] == first[0]  # partition 0 by default
    assert pipeline.get("/v1/events/6").json()["id"] == first[6]
    missing = pipeline.get("/v1/events/6?partition=1")
    assert (missing.status_code, missing.json()["detail"]) == (
        404, "no record at offset 6 of partition 1")
    for bad in ("2", "-1", "x"):
        refused = pipeline.get(f"/v1/events/0?partition={bad}")
        assert refused.status_code == 400
        assert list(refused.json()["fields"]["query"]) == ["partition"]


def test_events_tail_reads_every_partition_or_the_one_asked_for_and_follows_both(
        partitioned: dict[str, str], publisher: Publisher) -> None:
    first = publish(publisher, 0, 7, "a")
    second = publish(publisher, 1, 5, "a")
    last = hookline(partitioned, "events", "tail", "-n", "3")
    assert last.returncode == 0, last.stderr
    assert [(line.split()[0], line.split()[-1]) for line in last.stdout.splitlines()] == [
        *((f"0:{n}", first[n]) for n in (4, 5, 6)), *((f"1:{n}", second[n]) for n in (2, 3, 4))]
    exact = hookline(partitioned, "events", "tail", "--partition", "1", "--from", "0", "--json")
    assert [json.loads(line)["id"] for line in exact.stdout.splitlines()] == second
    outside = hookline(partitioned, "events", "tail", "--partition", "2")
    assert outside.returncode == 1
    assert "--partition 2 is not a partition" in outside.stderr
    assert_follows_both(partitioned, publisher)


def assert_follows_both(partitioned: dict[str, str], publisher: Publisher) -> None:
    """From offset 5 of each partition: partition 0's last two records, then what arrives."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "hookline", "events", "tail", "--follow", "--from", "5"],
        env=process_env(partitioned), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    printed: queue.Queue[str] = queue.Queue()

    def read() -> None:  # lines in a queue: a wait on the pipe would miss those buffered
        for line in follower.stdout or ():
            printed.put(line)
    threading.Thread(target=read, daemon=True).start()
    try:
        publish(publisher, 1, 1, "b")
        publish(publisher, 0, 1, "b")
        lines: list[str] = []
        while len(lines) < 4:
            try:
                lines.append(printed.get(timeout=30).split()[0])
            except queue.Empty:
                raise AssertionError(f"the follower printed only {lines}") from None
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(20) == 0
    assert sorted(lines) == ["0:5", "0:6", "0:7", "1:5"]
    assert [line for line in lines if line.startswith("0:")] == ["0:5", "0:6", "0:7"]
