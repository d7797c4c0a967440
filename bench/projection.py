"""Projection throughput from offset 0, against a bare reader of the same stream; with
--partitions, the same records split into 2, 4… partitions, one projector process each.

    python -m bench.projection [--records 200000] [--partitions 1 2 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import pika
import psycopg

from bench.common import reading_process, record, rss_mb, scratch, start_projector, stop
from bench.records import mixed
from hookline.config import Settings, consumer_name, partition_of
from hookline.log.envelope import decode
from hookline.log.reader import StreamReader
from hookline.log.topology import declare_stream, log_end_offset, open_connection


@dataclass(frozen=True)
class Run:
    partitions: int
    total_rate: float  # records/s from the processes' start
    steady_rate: float  # records/s from the first commit
    peak_mb: float  # the largest peak RSS of one projector process or its reading process
    outcomes: dict[str, int]


def append(settings: Settings, count: int) -> list[int]:
    """Append `count` mixed records, each to its subject's partition; each partition's end."""
    connection = open_connection(settings, "bench")
    channel = connection.channel()
    declare_stream(channel, settings)
    counts = [0] * settings.partitions
    # publish without per-message confirms, then wait for the log to hold them all
    for message_id, body in mixed(count):
        k = partition_of(decode(body).subject, settings.partitions)
        counts[k] += 1
        channel.basic_publish("", settings.streams[k], body, pika.BasicProperties(
            message_id=message_id, delivery_mode=2, content_type="application/json"))
    ends = [n - 1 for n in counts]
    deadline = time.monotonic() + 120
    for stream, end in zip(settings.streams, ends, strict=True):
        while log_end_offset(connection, stream) < end:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{stream} did not reach offset {end}")
            time.sleep(0.5)
    connection.close()
    return ends


def bare_reader(settings: Settings, last: int, batch: int) -> float:
    """Records/s of a reader that only consumes and acks, in batches like the projector."""
    done = [False]
    reader = StreamReader(settings, 0, batch, "bench-reader", lambda: done[0], idle_seconds=0.2)
    started = time.perf_counter()
    for chunk in reader.batches():
        reader.ack(chunk)
        done[0] = chunk.last_offset >= last
    elapsed = time.perf_counter() - started
    reader.close()
    return (last + 1) / elapsed


def projectors(settings: Settings, ends: list[int], batch: int) -> tuple[float, float, float]:
    """(records/s from start, steady records/s, largest peak RSS MB) of one `hookline project
    --partition K` process per partition, batches of `batch` records."""
    started = time.perf_counter()
    processes = [start_projector(settings, "--partition", str(k),
                                HOOKLINE_PROJECTOR_BATCH=str(batch))
                 for k in range(settings.partitions)]
    names = [consumer_name("projector", k, settings.partitions) for k in range(len(ends))]
    goal = dict(zip(names, ends, strict=True))
    first: tuple[float, int] | None = None
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        while True:
            done: dict[str, int] = dict(conn.execute(
                "SELECT consumer, last_offset FROM consumer_offsets").fetchall())
            progress = sum(done.get(name, -1) + 1 for name in names)
            if done and first is None:
                first = (time.perf_counter(), progress)
            if all(done.get(name, -1) >= end for name, end in goal.items()):
                break
            if any(process.poll() is not None for process in processes):
                raise RuntimeError("a projector exited")
            time.sleep(0.05)
    finished = time.perf_counter()
    peak = max(rss_mb(pid, "VmHWM") for process in processes
               for pid in (process.pid, reading_process(process.pid)) if pid)
    for process in processes:
        stop(process)
    assert first is not None
    total = sum(end + 1 for end in ends)
    return (total / (finished - started),
            (total - first[1]) / max(finished - first[0], 1e-9), peak)


def run(count: int, partitions: int, batch: int) -> tuple[Run, float | None]:
    """One configuration; with one partition, also the bare reader's rate on the same stream."""
    with scratch("bench_projection", partitions) as settings:
        ends = append(settings, count)
        # the bare reader's rate swings from pass to pass: the median of three passes
        reader_rate = statistics.median(bare_reader(settings, ends[0], batch)
                                        for _ in range(3)) if partitions == 1 else None
        total_rate, steady_rate, peak = projectors(settings, ends, batch)
        with psycopg.connect(settings.psycopg_url) as conn:
            outcomes: dict[str, int] = dict(conn.execute(
                "SELECT outcome, count(*) FROM events GROUP BY outcome").fetchall())
    return Run(partitions, total_rate, steady_rate, peak, outcomes), reader_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=Settings.projector_batch)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    counts = sorted(set(args.partitions) | {1})  # one partition is the baseline
    runs: list[Run] = []
    reader_rate = 0.0
    for partitions in counts:
        done, rate = run(args.records, partitions, args.batch)
        runs.append(done)
        reader_rate = rate or reader_rate
    rows = [f"| bare reader (consume + ack, median of 3 passes), 1 stream | {reader_rate:,.0f} "
            "| | 100% | | |"]
    one = runs[0].steady_rate
    rows += [f"| projector, {r.partitions} partition{'s' if r.partitions > 1 else ''} "
             f"({r.partitions} process{'es' if r.partitions > 1 else ''}) | {r.total_rate:,.0f} "
             f"| {r.steady_rate:,.0f} | {r.steady_rate / reader_rate:.0%} "
             f"| {r.steady_rate / one:.2f}x | {r.peak_mb:.0f} |" for r in runs]
    table = "\n".join([
        "| consumer | records/s from start | steady records/s | vs bare reader | vs 1 partition "
        "| peak RSS MB (largest process) |",
        "|---|---|---|---|---|---|", *rows])
    command = f"python -m bench.projection --records {args.records}"
    if counts != [1]:
        command += " --partitions " + " ".join(map(str, counts))
    record("Projection throughput", command, table,
           f"{args.records:,} mixed records (transactions, Stripe, Chapa, bookings; 5% "
           f"duplicates) from offset 0 into empty projections, batches of {args.batch}. "
           f"Outcomes: {runs[0].outcomes}.")


if __name__ == "__main__":
    main()
