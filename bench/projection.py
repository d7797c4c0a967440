"""Projection throughput from offset 0, against a bare reader of the same stream.

    python -m bench.projection [--records 200000]
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

import pika
import psycopg

from bench.common import env_for, hookline, record, rss_mb, scratch
from bench.records import mixed
from eventlog.reader import StreamReader
from eventlog.settings import Settings
from eventlog.topology import declare_stream, log_end_offset, open_connection


def append(settings: Settings, count: int) -> int:
    """Append `count` mixed records; returns the last offset."""
    connection = open_connection(settings, "bench")
    channel = connection.channel()
    declare_stream(channel, settings)
    # publish without per-message confirms, then wait for the log to hold them all
    for message_id, body in mixed(count):
        channel.basic_publish("", settings.stream, body, pika.BasicProperties(
            message_id=message_id, delivery_mode=2, content_type="application/json"))
    deadline = time.monotonic() + 120
    while (end := log_end_offset(connection, settings.stream)) < count - 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {end + 1} of {count} records reached the log")
        time.sleep(0.5)
    connection.close()
    return end


def bare_reader(settings: Settings, last: int, batch: int) -> float:
    """Records/s of a reader that only consumes and acks, in batches like the projector."""
    done = threading.Event()
    reader = StreamReader(settings, 0, batch, "bench-reader", done.is_set, idle_seconds=0.2)
    started = time.perf_counter()
    for chunk in reader.batches():
        reader.ack(chunk)
        if chunk.last_offset >= last:
            done.set()
    elapsed = time.perf_counter() - started
    reader.close()
    return (last + 1) / elapsed


def projector(settings: Settings, last: int) -> tuple[float, float, float]:
    """(records/s from process start, steady records/s, peak RSS MB) of `hookline project`."""
    env = env_for(settings, HOOKLINE_PROJECTOR_METRICS_BIND="127.0.0.1:18790")
    started = time.perf_counter()
    process = hookline("project", env=env)
    first: tuple[float, int] | None = None
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT last_offset FROM consumer_offsets").fetchone()
            if row is not None and first is None:
                first = (time.perf_counter(), row[0])
            if row is not None and row[0] >= last:
                break
            if process.poll() is not None:
                raise RuntimeError(f"projector exited with {process.returncode}")
            time.sleep(0.05)
    finished = time.perf_counter()
    peak = rss_mb(process.pid, "VmHWM")
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)
    assert first is not None
    steady = (last - first[1]) / max(finished - first[0], 1e-9)
    return (last + 1) / (finished - started), steady, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with scratch("bench_projection") as settings:
        last = append(settings, args.records)
        reader_rate = bare_reader(settings, last, args.batch)
        total_rate, steady_rate, peak = projector(settings, last)
        with psycopg.connect(settings.psycopg_url) as conn:
            outcomes: dict[str, int] = dict(conn.execute(
                "SELECT outcome, count(*) FROM events GROUP BY outcome").fetchall())
    table = "\n".join([
        "| consumer | records/s | vs bare reader | peak RSS MB |",
        "|---|---|---|---|",
        f"| bare reader (consume + ack) | {reader_rate:,.0f} | 100% | |",
        f"| projector, from process start | {total_rate:,.0f} | {total_rate / reader_rate:.0%} "
        f"| {peak:.0f} |",
        f"| projector, steady state | {steady_rate:,.0f} | {steady_rate / reader_rate:.0%} | |",
    ])
    record("Projection throughput", f"python -m bench.projection --records {args.records}",
           table, f"{args.records:,} mixed records (transactions, Stripe, Chapa, bookings; 5% "
                  f"duplicates) from offset 0 into empty projections. Outcomes: {outcomes}.")


if __name__ == "__main__":
    main()
