"""Operators' commands: `status`, `rebuild`, `reprocess`, `outbox retry`, `events tail`,
`events reject`."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hookline.config import Settings

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

    from hookline.lifecycle import Stopper
    from hookline.projection.rebuild import Report
    from hookline.projection.reprocess import Summary

Command = Callable[[str, Callable[[Settings, argparse.Namespace], None], str],
                   argparse.ArgumentParser]


def add_commands(commands: Any, command: Command) -> None:
    """Register the operators' sub-commands on the `hookline` parser."""
    status = command("status", status_command, "print the end of each of the log's streams, "
                     "each consumer's checkpoint and lag, and the outbox by status (as GET "
                     "/v1/status)")
    status.add_argument("--json", action="store_true", help="print it as JSON")
    rebuild = command("rebuild", rebuild_command, "replay the log from offset 0 into fresh "
                      "projection tables, then swap them in; sends no email")
    rebuild.add_argument("--dry-run", action="store_true",
                         help="report the differences a rebuild would make, change nothing")
    rebuild.add_argument("--json", action="store_true", help="print the report as JSON")
    rebuild.add_argument("--lock-wait", type=float, default=60.0, metavar="SECONDS",
                         help="how long to keep trying to lock the live tables (60)")
    _add_reprocess(command)
    outbox = commands.add_parser("outbox", help="act on the email outbox")
    retry = outbox.add_subparsers(required=True, metavar="ACTION").add_parser(
        "retry", help="make a dead or failed email pending again, due now")
    retry.set_defaults(command=outbox_retry_command)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, help="the email's id (GET /v1/outbox)")
    which.add_argument("--all-dead", action="store_true", help="every dead email")
    events = commands.add_parser("events", help="read the log, reject a record ahead")
    actions = events.add_subparsers(required=True, metavar="ACTION")
    tail = actions.add_parser(
        "tail", help="print the log's last records, and with --follow new ones as they arrive; "
        "with several partitions, each line starts with PARTITION:OFFSET")
    tail.set_defaults(command=events_tail_command)
    tail.add_argument("--source", help="only records of this source")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing until Ctrl-C")
    tail.add_argument("--lines", "-n", type=int, default=10,
                      help="how many last records of each partition (10)")
    tail.add_argument("--from", dest="start", type=int, metavar="OFFSET",
                      help="start at this offset (of each partition read) instead")
    tail.add_argument("--partition", type=int, metavar="K",
                      help="read partition K only (default every partition)")
    tail.add_argument("--json", action="store_true",
                      help="print each record exactly as the log holds it")
    reject = actions.add_parser(
        "reject", help="have the projector (and any rebuild) project the record at OFFSET "
        "`rejected` with the reason, without interpreting it; only for a record not yet "
        "projected, e.g. one that stops the projector")
    reject.set_defaults(command=events_reject_command)
    reject.add_argument("offset", type=int, metavar="OFFSET", help="the record's offset")
    reject.add_argument("--partition", type=int, default=0, metavar="K",
                        help="the record's partition (0)")
    reject.add_argument("--reason", required=True, help="why, kept in the event trail")


def status_command(settings: Settings, args: argparse.Namespace) -> None:
    from sqlalchemy import create_engine

    from hookline.db.schema import check_reachable
    from hookline.log.topology import read_log_ends
    from hookline.readside import queries

    check_reachable(settings)
    log_ends = read_log_ends(settings)
    engine = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        found = queries.status(conn, log_ends)
    engine.dispose()
    print(json.dumps(found, indent=2) if args.json else render_status(found))


def render_status(found: dict[str, Any]) -> str:
    log, outbox, partitions = found["log"], found["outbox"], found["partitions"]
    if len(partitions) == 1:
        lines = [f"log        {log['stream']}: {_end(log)}"]
    else:
        lines = [f"{'log':<13}{log['stream']}, {len(partitions)} partitions"]
        lines += [f"{'partition ' + str(p['partition']):<13}{p['stream']}: {_end(p)}"
                  for p in partitions]
    lines.append(f"{'consumer':<24}{'checkpoint':>12}{'lag':>12}")
    lines += [f"{c['consumer']:<24}{c['checkpoint']:>12,}"
              f"{'?' if c['lag'] is None else format(c['lag'], ','):>12}"
              for c in found["consumers"]] or ["(no consumer has a checkpoint yet)"]
    counts = "   ".join(f"{status} {n:,}" for status, n in outbox["counts"].items())
    age = outbox["oldest_pending_age_seconds"]
    lines += [f"outbox     {counts}",
              f"           oldest email waiting: {'none' if age is None else _age(age)}"]
    return "\n".join(lines)


def _end(stream: dict[str, Any]) -> str:
    end = stream["end_offset"]
    return (f"unreadable ({stream['error']})" if end is None else
            "empty" if end < 0 else f"end offset {end:,}")


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes
            else f"{seconds:.1f}s")


def rebuild_command(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from hookline.db.schema import check_reachable
    from hookline.lifecycle import Stopper
    from hookline.log.reader import OffsetGap
    from hookline.log.topology import ensure_stream
    from hookline.projection.rebuild import Progress, Rebuild, RebuildFailed

    check_reachable(settings)
    ensure_stream(settings)
    rebuild = Rebuild(settings, Stopper().install(), Progress(sys.stderr), args.lock_wait)
    try:
        report = rebuild.run(dry_run=args.dry_run)
    except (RebuildFailed, OffsetGap, psycopg.Error) as exc:
        sys.exit(f"hookline: rebuild failed, the live projections are untouched: {exc}")
    print(json.dumps(_report(report), indent=2) if args.json else _render_report(report))


def _report(report: Report) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(report)


def _render_report(report: Report) -> str:
    upto = _upto(report)
    if report.swapped:
        rows = ", ".join(f"{table} {n:,}" for table, n in report.rows.items())
        return (f"rebuilt from the log up to {upto} and swapped in: {rows} "
                "rows; the outbox and checkpoints are as they were")
    lines = [f"dry run: the log replayed up to {upto} (the live checkpoint"
             f"{'s' if len(report.checkpoints) > 1 else ''}); against the live tables a rebuild "
             "would make"]
    for diff in report.diffs:
        if diff.table == "email_outbox":
            lines.append(f"  email_outbox: never changed by a rebuild; {diff.added} emails the "
                         f"replay owes are missing from it, {diff.removed} of its rows the "
                         "replay would not write")
        else:
            lines.append(f"  {diff.table}: " + (
                f"+{diff.added} added, -{diff.removed} removed, ~{diff.changed} changed"
                if diff.differs else "no difference"))
        lines += [f"      {example}" for example in diff.examples]
    return "\n".join(lines)


def _upto(report: Report) -> str:
    """'offset N', or with partitions 'projector.0 at offset N, projector.1 at offset M'."""
    if len(report.checkpoints) <= 1:
        return f"offset {report.offset:,}"
    return ", ".join(f"{consumer} at offset {offset:,}"
                     for consumer, offset in sorted(report.checkpoints.items()))


def cli_actor() -> str:
    """`cli:<OS user>`: who ran a command, as the audit trail names them."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"


@dataclass
class AuditEntry:
    """What the audit row of the action under way will say; the action may fill it in."""

    targets: list[str]
    detail: dict[str, Any] = field(default_factory=dict)


@contextmanager
def audited(conn: psycopg.Connection[Any], action: str, targets: Sequence[str] = (),
            failures: tuple[type[Exception], ...] = ()) -> Iterator[AuditEntry]:
    """The block's work and its audit row (actor cli:<OS user>) in one transaction; one of
    `failures` raised by it is audited `failed`, in a transaction of its own, and raised on."""
    from hookline.db import audit

    entry, actor = AuditEntry(list(targets)), cli_actor()
    try:
        with conn.transaction():
            yield entry
            audit.record(conn, actor, action, entry.targets, entry.detail)
    except failures as exc:
        audit.record(conn, actor, action, entry.targets,
                     {**entry.detail, "error": str(exc.args[0])}, "failed")
        raise


def _add_reprocess(command: Command) -> None:
    reprocess = command("reprocess", reprocess_command, "project again, through today's code, "
                        "chosen records that were rejected or ignored (by offset, or by a "
                        "filter); no checkpoint moves, no email is owed twice")
    reprocess.add_argument("--offset", type=int, action="append", metavar="K", default=[],
                           help="a record's offset (repeatable)")
    reprocess.add_argument("--partition", type=int, default=0, metavar="P",
                           help="the partition of the --offset records (0)")
    reprocess.add_argument("--source", help="every record of this source")
    reprocess.add_argument("--type", help="every record of this type")
    reprocess.add_argument("--outcome", choices=("applied", "duplicate", "ignored", "rejected"),
                           help="every record projected with this outcome")
    reprocess.add_argument("--since", type=_moment, metavar="TIME",
                           help="every record received at or after TIME (ISO 8601)")
    reprocess.add_argument("--until", type=_moment, metavar="TIME",
                           help="every record received before TIME (ISO 8601)")
    reprocess.add_argument("--dry-run", action="store_true",
                           help="report what would change, change nothing")
    reprocess.add_argument("--json", action="store_true", help="print the summary as JSON")


def _moment(text: str) -> datetime:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def reprocess_command(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from hookline.config import not_a_partition
    from hookline.db.schema import check_reachable
    from hookline.lifecycle import Stopper
    from hookline.projection import reprocess

    if refusal := not_a_partition(args.partition, settings.partitions):
        sys.exit(f"hookline: {refusal}")
    try:
        selection = reprocess.Selection(
            records=tuple((args.partition, offset) for offset in args.offset),
            source=args.source, type=args.type, outcome=args.outcome, since=args.since,
            until=args.until)
    except reprocess.SelectionInvalid as exc:
        sys.exit(f"hookline: {exc}")
    check_reachable(settings)
    stopper = Stopper().install()
    failures = (reprocess.NotProjected, reprocess.ReprocessFailed)
    try:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn, \
                audited(conn, "events.reprocess", failures=failures) as entry:
            entry.detail = {"dry_run": args.dry_run}
            summary = reprocess.reprocess(settings, selection, args.dry_run,
                                          should_stop=stopper.is_set)
            entry.targets, entry.detail = summary.audited()
    except (*failures, psycopg.Error) as exc:
        sys.exit(f"hookline: reprocess failed: {exc}")
    print(json.dumps(summary.as_dict(), indent=2) if args.json else _render_summary(summary))


def _render_summary(summary: Summary) -> str:
    what = "dry run: would project" if summary.dry_run else "projected"
    lines = [f"{summary.selected:,} records selected: {what} {summary.reprocessed:,} again "
             f"({summary.changed:,} changed, {summary.unchanged:,} unchanged, "
             f"{summary.still_rejected:,} still rejected); {summary.skipped:,} skipped, "
             "already applied or duplicate"]
    if summary.operator_rejected:
        lines.append(f"{summary.operator_rejected:,} rejected by an operator left out: choose "
                     "them by --offset to project them again")
    lines += [f"  {r.partition}:{r.offset}  {r.before} -> {r.after}"
              + (f"  ({r.error})" if r.error else "") for r in summary.records]
    if summary.dry_run:
        lines.append("rows that would change: " + ", ".join(
            f"{table} {n:,}" for table, n in summary.rows_changed.items()))
        lines += [f"  {row.table} {row.key}: {row.before} -> {row.after}" for row in summary.rows]
    owed = "would be enqueued" if summary.dry_run else "enqueued"
    lines.append(f"emails {owed}: {summary.emails_enqueued:,}")
    lines += [f"  {e['template']} to {e['recipient']} ({e['event_id']})" for e in summary.emails]
    return "\n".join(lines)


def outbox_retry_command(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from hookline.db import outbox
    from hookline.db.schema import check_reachable

    check_reachable(settings)
    try:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            if args.all_dead:
                with audited(conn, "outbox.retry_dead") as entry:
                    ids = outbox.retry_dead(conn)
                    entry.targets, entry.detail = [f"outbox:{i}" for i in ids], {
                        "count": len(ids)}
                print(f"{len(ids)} dead emails are pending again"
                      + (f": {', '.join(map(str, ids))}" if ids else ""))
                return
            with audited(conn, "outbox.retry", [f"outbox:{args.id}"],
                         (outbox.EmailMissing, outbox.NotRetryable)) as entry:
                row = outbox.retry(conn, args.id)
                entry.detail = {"template": row["template"]}
    except (outbox.EmailMissing, outbox.NotRetryable) as exc:
        sys.exit(f"hookline: {exc.args[0]}")
    print(f"email {row['id']} ({row['template']} to {row['recipient']}) is pending again")


def events_reject_command(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from hookline.config import PROJECTOR, consumer_name, not_a_partition
    from hookline.db import rejections
    from hookline.db.schema import check_reachable
    from hookline.log.topology import read_log_ends

    reason = args.reason.strip()
    if refusal := not_a_partition(args.partition, settings.partitions):
        sys.exit(f"hookline: {refusal}")
    if args.offset < 0 or not reason:
        sys.exit("hookline: the offset must be 0 or more and the reason must not be empty")
    check_reachable(settings)
    (end,) = read_log_ends(settings.partition(args.partition)).partitions
    if end.end_offset is None:
        sys.exit(f"hookline: {end.stream}: {end.error}")
    if args.offset > end.end_offset:
        sys.exit(f"hookline: offset {args.offset} is beyond the end of the log ({end.stream} "
                 f"ends at offset {end.end_offset})")
    consumer = consumer_name(PROJECTOR, args.partition, settings.partitions)
    try:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn, audited(
                conn, "events.reject", [f"events:{args.partition}:{args.offset}"],
                (rejections.AlreadyProjected,)) as entry:
            entry.detail = {"reason": reason}
            replaced = rejections.add(conn, consumer, args.partition, args.offset, reason)
            entry.detail["replaced"] = replaced
    except rejections.AlreadyProjected as exc:
        sys.exit(f"hookline: {exc}")
    print(f"offset {args.offset} of partition {args.partition} will be projected rejected "
          f"({'reason replaced' if replaced else 'recorded'}): rejected by an operator: {reason}")


def events_tail_command(settings: Settings, args: argparse.Namespace) -> None:
    from hookline.config import not_a_partition
    from hookline.lifecycle import Stopper
    from hookline.log.topology import read_log_ends

    if args.partition is None:
        chosen, read = list(range(settings.partitions)), settings
    elif refusal := not_a_partition(args.partition, settings.partitions):
        sys.exit(f"hookline: {refusal}")
    else:
        chosen, read = [args.partition], settings.partition(args.partition)
    tails = []
    for k, found in zip(chosen, read_log_ends(read).partitions, strict=True):
        if found.end_offset is None:
            sys.exit(f"hookline: {found.stream}: {found.error}")
        tails.append(_Tail(settings, k, found.end_offset, args))
    stopper = Stopper().install()
    if not args.follow or len(tails) == 1:  # one partition after another
        for tail in tails:
            tail.run(stopper)
        return
    # following several: one reader each, lines printed as they come
    readers = [threading.Thread(target=t.run, args=(stopper,), name=f"tail {t.partition}",
                                daemon=True) for t in tails]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()


class _Tail:
    """One partition's part of `events tail`: its last records or those from --from, and
    with --follow new ones until stopped."""

    printing = threading.Lock()  # whole lines, when several partitions print at once

    def __init__(self, settings: Settings, partition: int, end: int,
                 args: argparse.Namespace) -> None:
        self.settings, self.partition, self.args = settings.partition(partition), partition, args
        self.label = None if settings.partitions == 1 else partition
        self.start = args.start if args.start is not None else max(0, end - args.lines + 1)
        self.last = None if args.follow else end

    def run(self, stopper: Stopper) -> None:
        from hookline.log.reader import StreamReader

        last = self.last
        if last is not None and self.start > last:
            return
        reader = StreamReader(self.settings, self.start, 200, "tail", stopper.is_set,
                              idle_seconds=0.3)
        try:
            for batch in reader.batches():
                for record in batch.records:
                    if last is not None and record.offset > last:
                        return
                    self.show(record.offset, record.body)
                reader.ack(batch)
                if last is not None and batch.last_offset >= last:
                    return
        except BrokenPipeError:  # the reader of our output went away (| head): done
            stopper.set()
            sys.stderr.close()
        finally:
            reader.close()

    def show(self, offset: int, body: bytes) -> None:
        line = _tail_line(offset, body, self.args.source, self.args.json, self.label)
        if line is not None:
            with self.printing:
                print(line, flush=True)


def _tail_line(offset: int, body: bytes, source: str | None, exact: bool,
               partition: int | None) -> str | None:
    from hookline.log.envelope import decode

    where = f"{offset:>10}" if partition is None else f"{f'{partition}:{offset}':>13}"
    try:
        envelope = decode(body)
    except ValueError:
        return None if source else f"{where}  (not an envelope: {len(body)} bytes)"
    if source is not None and envelope.source != source:
        return None
    if exact:
        return body.decode(errors="replace")
    moment = envelope.received_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (f"{where}  {moment}  {envelope.source:<12} {envelope.type:<30} "
            f"{envelope.subject}  {envelope.id}")
