"""Reprocess rate: records rejected by yesterday's interpretation, projected again through
today's by `hookline reprocess`'s function, after a dry run of the same selection.

    python -m bench.reprocess [--records 20000]

The log holds --records booking.created records, each followed by a payment for its booking;
they are projected by a projector whose booking interpretation rejects every booking.created,
then every rejected bookings record is reprocessed (each becomes applied, joins its payment and
owes a booking_confirmation email).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pika
import psycopg

from bench.common import record, scratch
from bench.records import booking, transaction
from hookline.config import Settings
from hookline.log.envelope import encode
from hookline.log.reader import Record
from hookline.log.topology import declare_stream, log_end_offset, open_connection
from hookline.projection.batch import project_batch
from hookline.projection.reprocess import Selection, Summary, reprocess
from tests.integration.test_reprocess import yesterday  # the interpretation bug the test fixes

BATCH = 2000


def log_records(count: int) -> Iterator[Record]:
    now = datetime.now(UTC)
    for n in range(count):
        for offset, (key, source, kind, payload) in ((2 * n, booking(n)),
                                                     (2 * n + 1, transaction(n))):
            yield Record(offset, encode(key, source, kind, f"BK-{n}", now, payload))


def append(settings: Settings, count: int) -> None:
    """The records, at offsets 0 … 2 * count - 1 of a fresh stream."""
    connection = open_connection(settings, "bench")
    channel = connection.channel()
    declare_stream(channel, settings)
    for found in log_records(count):
        channel.basic_publish("", settings.stream, found.body,
                              pika.BasicProperties(delivery_mode=2))
    deadline = time.monotonic() + 120
    while log_end_offset(connection, settings.stream) < 2 * count - 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{settings.stream} did not reach offset {2 * count - 1}")
        time.sleep(0.5)
    connection.close()


def project(settings: Settings, count: int) -> None:
    """Project the log as yesterday's code did, in the projector's batches."""
    broken, expected, batch = yesterday(), -1, []
    with psycopg.connect(settings.psycopg_url, prepare_threshold=0) as conn:
        for found in log_records(count):
            batch.append(found)
            if len(batch) == BATCH:
                project_batch(conn, "projector", batch, expected, broken)
                expected, batch = batch[-1].offset, []
        if batch:
            project_batch(conn, "projector", batch, expected, broken)


REJECTED = Selection(source="bookings", outcome="rejected")


def timed(settings: Settings, selection: Selection, dry_run: bool) -> tuple[Summary, float]:
    started = time.perf_counter()
    summary = reprocess(settings, selection, dry_run)
    return summary, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with scratch("bench_reprocess") as settings:
        append(settings, args.records)
        project(settings, args.records)
        dry, dry_seconds = timed(settings, REJECTED, dry_run=True)
        done, seconds = timed(settings, REJECTED, dry_run=False)
        again, again_seconds = timed(settings, Selection(source="bookings"), dry_run=False)
    load_after = os.getloadavg()
    assert done.reprocessed == done.changed == args.records, done
    assert (again.selected, again.skipped, again.reprocessed) == (args.records, args.records, 0)
    rows = [("dry run (one transaction, rolled back)", dry, dry_seconds, dry.reprocessed),
            ("reprocess (chunks of 500, committed)", done, seconds, done.reprocessed),
            ("every bookings record again (each skipped)", again, again_seconds, again.selected)]
    table = "\n".join([
        "| run | records selected | projected again | emails | seconds | records/s |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {s.selected:,} | {s.reprocessed:,} | {s.emails_enqueued:,} | "
          f"{elapsed:.1f} | {n / elapsed:,.0f} |" for name, s, elapsed, n in rows)])
    record("Reprocess rate", f"python -m bench.reprocess --records {args.records}", table,
           f"{args.records:,} booking.created records rejected by a broken interpretation, "
           f"each followed by an applied payment ({2 * args.records:,} records in the log), "
           "reprocessed by the filter source=bookings outcome=rejected; each becomes applied "
           "and owes one email. Load average (1, 5, 15 min) before "
           f"{', '.join(f'{x:.2f}' for x in load_before)}, after "
           f"{', '.join(f'{x:.2f}' for x in load_after)}: other work shared the machine.")


if __name__ == "__main__":
    main()
