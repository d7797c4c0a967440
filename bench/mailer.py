"""Mailer throughput: pending outbox rows to a local SMTP sink, one mailer and then several.

    python -m bench.mailer [--emails 5000] [--mailers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiosmtpd.controller import Controller

from bench.common import (
    env_for,
    exit_on_sigterm,
    free_port,
    hookline,
    record,
    scratch,
    stop,
    wait_http,
)
from hookline.config import Settings
from hookline.db.outbox import Email, enqueue


class Sink:
    """An SMTP handler that only counts what it accepts."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_DATA(self, _server: Any, _session: Any, _envelope: Any) -> str:  # noqa: N802
        self.accepted += 1
        return "250 accepted"


@dataclass(frozen=True)
class Round:
    mailers: int
    emails: int
    seconds: float  # outbox committed → the last row marked sent
    steady: float  # emails/s between the first and the last sent_at
    accepted: int  # messages the sink took
    not_sent: dict[str, int]
    mailer_cpu: float  # mean share of one core each mailer used
    sink_cpu: float  # share of one core this process (the sink, mostly) used

    @property
    def rate(self) -> float:
        return self.emails / self.seconds


def context(n: int) -> dict[str, object]:
    """What the projector writes for a booking_confirmation."""
    return {"payment": None, "booking": {
        "reference": f"BK-{n}", "customer_name": f"Guest {n}", "destination": "Lalibela",
        "travel_date": "Monday 01 March 2027", "return_date": None, "travelers": 2,
        "total": "300.00 EUR", "expires_at": "22 November 2026 at 10:15 UTC"}}


def write_outbox(conn: psycopg.Connection[Any], count: int, run: int) -> None:
    emails = [Email(f"bookings:bench-{run}-{n}", "booking_confirmation", f"BK-{n}",
                    f"guest{n}@example.com", context(n)) for n in range(count)]
    with conn.transaction():
        enqueue(conn, emails, datetime.now(UTC))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def sent(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM email_outbox WHERE status = 'sent'").fetchone()
    return int(row[0]) if row else 0


def start_mailers(settings: Settings, smtp_port: int, count: int) -> list[Any]:
    processes = []
    try:
        for _ in range(count):
            bind = f"127.0.0.1:{free_port()}"
            processes.append(hookline("mail", env=env_for(
                settings, HOOKLINE_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
                HOOKLINE_MAILER_METRICS_BIND=bind)))
            wait_http(f"http://{bind}/metrics")  # served just before the mailer's first round
    except BaseException:
        for process in processes:
            stop(process)
        raise
    return processes


def one_round(settings: Settings, sink: Sink, smtp_port: int, mailers: int, emails: int
              ) -> Round:
    """Start `mailers` on an empty outbox, commit `emails` pending rows, time them all sent."""
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        conn.execute("TRUNCATE email_outbox")
        sink.accepted = 0
        processes = start_mailers(settings, smtp_port, mailers)
        try:
            write_outbox(conn, emails, mailers)
            committed, cpu = time.perf_counter(), time.process_time()
            mailer_cpu = sum(cpu_seconds(p.pid) for p in processes)
            deadline = committed + max(120.0, emails / 10)
            while sent(conn) < emails:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {sent(conn)} of {emails} sent in time")
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError("a mailer exited during the run")
                time.sleep(0.05)
            seconds = time.perf_counter() - committed
            cpu = (time.process_time() - cpu) / seconds
            mailer_cpu = (sum(cpu_seconds(p.pid) for p in processes) - mailer_cpu) / seconds
        finally:
            for process in processes:
                stop(process)
        span, statuses = conn.execute(
            "SELECT extract(epoch FROM max(sent_at) - min(sent_at)), "
            "(SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM (SELECT status, count(*) n "
            "FROM email_outbox WHERE status <> 'sent' GROUP BY status) s) "
            "FROM email_outbox").fetchone() or (0, {})
    return Round(mailers, emails, seconds, (emails - 1) / max(float(span or 0), 1e-9),
                 sink.accepted, dict(statuses), mailer_cpu / mailers, cpu)


def table(rounds: list[Round]) -> str:
    alone = rounds[0].rate
    lines = ["| mailers | emails | seconds | emails/s | vs one mailer | emails/s first → last "
             "sent | CPU per mailer | CPU of the sink | messages the sink took | not sent |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.mailers} | {r.emails:,} | {r.seconds:.1f} | {r.rate:,.0f} | "
              f"{r.rate / alone:.2f} x | {r.steady:,.0f} | {r.mailer_cpu:.0%} | {r.sink_cpu:.0%} | "
              f"{r.accepted:,} | {r.not_sent or '-'} |"
              for r in rounds]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=5_000)
    parser.add_argument("--mailers", type=int, default=2)
    args = parser.parse_args()
    exit_on_sigterm()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink, smtp_port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        with scratch("bench_mailer") as settings:
            rounds = [one_round(settings, sink, smtp_port, n, args.emails)
                      for n in sorted({1, args.mailers})]
    finally:
        controller.stop()
    record("Mailer throughput", f"python -m bench.mailer --emails {args.emails} "
           f"--mailers {args.mailers}", table(rounds),
           f"{args.emails:,} pending booking_confirmation rows committed at once while the "
           "mailers wait on an empty outbox; each mailer renders the templates and sends over "
           "SMTP on loopback to a sink in the benchmark's process that only counts messages. "
           "Seconds run from the commit to the last row marked sent (a mailer idle on an empty "
           "outbox wakes within a second).")


if __name__ == "__main__":
    main()
