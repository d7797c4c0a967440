"""End to end at a constant request rate: signed webhooks in, projected rows out, and the lag.

    python -m bench.end_to_end [--rate 500] [--duration 60] [--workers 2] [--threads 16]

A small open-loop client sends mixed signed webhooks (transactions, Stripe, Chapa, bookings; 5%
redeliveries) on a fixed schedule to `hookline ingest` while `hookline project` runs; the lag
(log end offset minus the projector's checkpoint) is sampled every half second and plotted.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import psycopg

from bench.common import (
    ROOT,
    env_for,
    exit_on_sigterm,
    record,
    scratch,
    start_ingest,
    start_projector,
    stop,
)
from bench.records import KINDS
from hookline.config import Settings
from hookline.log.topology import log_end_offset, open_connection
from hookline.senders.signatures import sign_chapa, sign_standard_webhooks, sign_stripe

PLOT = ROOT / "bench" / "end_to_end_lag.png"
SECRETS = {"stripe": "whsec_bench_stripe_secret", "chapa": "bench-chapa-secret",
           "bookings": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
           "transactions": "whsec_" + "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}
CHECKPOINT = "SELECT coalesce(max(last_offset), -1) FROM consumer_offsets WHERE consumer = " \
             "'projector'"
DRAIN_SECONDS = 120


@dataclass(frozen=True, slots=True)
class Delivery:
    path: str
    body: bytes
    source: str
    message_id: str

    def headers(self) -> dict[str, str]:
        """Signed now, as the provider would sign it when (re)sending."""
        now = int(time.time())
        headers = {"Content-Type": "application/json"}
        if self.source == "stripe":
            headers["Stripe-Signature"] = sign_stripe(SECRETS["stripe"], now, self.body)
        elif self.source == "chapa":
            headers.update(sign_chapa(SECRETS["chapa"], self.body))
        else:
            headers.update({"webhook-id": self.message_id, "webhook-timestamp": str(now),
                            "webhook-signature": sign_standard_webhooks(
                                SECRETS[self.source], self.message_id, now, self.body)})
        return headers


def deliveries(count: int, redelivered: float = 0.05, seed: int = 11) -> list[Delivery]:
    """The four sources in turn, some deliveries sent again as providers do."""
    rng = random.Random(seed)
    plan: list[Delivery] = []
    for n in range(count):
        if plan and rng.random() < redelivered:
            plan.append(rng.choice(plan))
            continue
        _, source, _, body = KINDS[n % len(KINDS)](n)
        plan.append(Delivery(f"/v1/webhooks/{source}", body, source, f"msg_{n}"))
    return plan


@dataclass
class Load:
    """Sends `plan` at `rate` requests/s from a few threads; a late request goes at once."""

    port: int
    plan: list[Delivery]
    rate: float
    clients: int = 32
    # (seconds from the start when sent, seconds taken, status or 0, seconds behind schedule)
    results: list[tuple[float, float, int, float]] = field(default_factory=list)
    started: float = 0.0  # perf_counter time of the first slot
    wall_started: float = 0.0

    def run(self) -> float:
        """Send everything (or give up at the deadline); returns when the last answer came."""
        self._slots = itertools.count()
        self.started, self.wall_started = time.perf_counter(), time.time()
        self.deadline = self.started + len(self.plan) / self.rate + 30
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return max((self.started + sent + took for sent, took, _, _ in self.results),
                   default=time.perf_counter())

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while (slot := next(self._slots)) < len(self.plan):
            due = self.started + slot / self.rate
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)  # the schedule, not a wait for a result
            elif time.perf_counter() > self.deadline:
                break
            delivery, sent = self.plan[slot], time.perf_counter()
            try:
                conn.request("POST", delivery.path, delivery.body, delivery.headers())
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0  # no answer: counted with the errors, and a fresh connection
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            took = time.perf_counter() - sent
            self.results.append((sent - self.started, took, status, sent - due))
        conn.close()


class Lag(threading.Thread):
    """Follows the log's end as the broker delivers it, and the projector's checkpoint.

    topology.log_end_offset reads from the last chunk until the stream has been quiet for
    0.2 s, which under steady load happens only once its prefetch window of 10,000 is full;
    so this thread tails the stream instead, acking as it goes, and samples every `interval`.
    """

    def __init__(self, settings: Settings, interval: float = 0.5) -> None:
        super().__init__(name="lag", daemon=True)
        self.settings, self.interval = settings, interval
        self.done = threading.Event()
        self.end = -1
        self.checkpoints: list[tuple[float, int]] = []
        self.samples: list[tuple[float, int]] = []  # (perf_counter time, records behind)
        self.error: Exception | None = None
        self._poller = threading.Thread(target=self._poll_checkpoint, daemon=True)

    def run(self) -> None:
        self._poller.start()
        try:
            connection = open_connection(self.settings, "bench-lag")
            try:
                self._follow(connection)
            finally:
                self._close(connection)
        except Exception as exc:  # reported by the benchmark, which then fails loudly
            self.error = exc
        self._poller.join()

    def _follow(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=5000)
        last_tag = 0

        def on_message(_c: object, method: Any, properties: Any, _b: bytes) -> None:
            nonlocal last_tag
            self.end, last_tag = int(properties.headers["x-stream-offset"]), method.delivery_tag

        channel.basic_consume(self.settings.stream, on_message,
                              arguments={"x-stream-offset": "last"})
        next_sample = time.perf_counter()
        while not self.done.is_set():
            connection.process_data_events(time_limit=0.02)
            if last_tag:
                channel.basic_ack(last_tag, multiple=True)
                last_tag = 0
            if (now := time.perf_counter()) >= next_sample:
                self.samples.append((now, max(0, self.end - self.checkpoint())))
                next_sample += self.interval

    @staticmethod
    def _close(connection: pika.BlockingConnection) -> None:
        # records delivered during the close are nacked by pika, which a stream refuses
        try:
            if connection.is_open:
                connection.close()
        except pika.exceptions.AMQPError:
            pass

    def checkpoint(self) -> int:
        return self.checkpoints[-1][1] if self.checkpoints else -1

    def _poll_checkpoint(self) -> None:
        with psycopg.connect(self.settings.psycopg_url, autocommit=True) as conn:
            while not self.done.wait(0.02):
                row = conn.execute(CHECKPOINT).fetchone()
                self.checkpoints.append((time.perf_counter(), row[0] if row else -1))

    def caught_up_at(self, end: int, timeout: float) -> float:
        """perf_counter time of the first poll that saw the checkpoint at `end`."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.error is not None:
                raise self.error
            reached = [t for t, offset in self.checkpoints if offset >= end]
            if reached:
                return reached[0]
            self.done.wait(0.05)
        raise RuntimeError(f"the projector did not reach offset {end} within {timeout} s")


def log_end(settings: Settings) -> int:
    connection = open_connection(settings, "bench-end")
    try:
        return log_end_offset(connection, settings.stream)
    finally:
        connection.close()


def warm_up(settings: Settings, port: int, plan: list[Delivery], rate: float) -> int:
    """One second of load, then wait for the projector; returns its checkpoint."""
    Load(port, plan, rate).run()
    end = log_end(settings)
    deadline = time.monotonic() + DRAIN_SECONDS
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        while (row := conn.execute(CHECKPOINT).fetchone()) is None or row[0] < end:
            if time.monotonic() > deadline:
                raise RuntimeError("the projector did not take the warm-up records")
            time.sleep(0.05)
    return end


def latencies(settings: Settings, after: int) -> tuple[int, float, float, float, dict[str, int]]:
    """(count, p50, p99, max) of projected_at - received_at in ms, and the outcomes."""
    with psycopg.connect(settings.psycopg_url) as conn:
        row = conn.execute(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) FROM ("
            "SELECT extract(epoch FROM projected_at - received_at) * 1000 AS ms "
            'FROM events WHERE "offset" > %s) delays', (after,)).fetchone()
        outcomes: dict[str, int] = dict(conn.execute(
            'SELECT outcome, count(*) FROM events WHERE "offset" > %s GROUP BY outcome',
            (after,)).fetchall())
    assert row is not None
    return int(row[0]), float(row[1] or 0), float(row[2] or 0), float(row[3] or 0), outcomes


def delays(settings: Settings, after: int, origin: float) -> list[tuple[float, float]]:
    """(seconds from `origin` when received, ms until projected) of every record measured."""
    with psycopg.connect(settings.psycopg_url) as conn:
        return [(float(at) - origin, float(ms)) for at, ms in conn.execute(
            "SELECT extract(epoch FROM received_at), "
            "extract(epoch FROM projected_at - received_at) * 1000 "
            'FROM events WHERE "offset" > %s', (after,))]


def plot(samples: list[tuple[float, int]], delayed: list[tuple[float, float]], load: Load,
         load_seconds: float, drained: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(9, 6), dpi=110, sharex=True)
    top.plot([t - load.started for t, _ in samples], [lag for _, lag in samples], marker=".",
             linewidth=1)
    bottom.scatter([t for t, _ in delayed], [ms for _, ms in delayed], s=2, alpha=0.3)
    for axes in (top, bottom):
        axes.axvspan(0, load_seconds, color="tab:orange", alpha=0.12,
                     label=f"load: {load.rate:.0f} requests/s")
        axes.axvline(load_seconds + drained, color="tab:green", linestyle="--",
                     label=f"lag back to zero (+{drained * 1000:.0f} ms)")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    top.set_ylabel("consumer lag (records)")
    top.set_title("Projector lag and per-record delay under constant load")
    top.legend(loc="upper right")
    bottom.set_ylabel("projected_at - received_at (ms)")
    bottom.set_xlabel("seconds since the load started")
    figure.tight_layout()
    figure.savefig(PLOT)
    pyplot.close(figure)


def percentile(values: list[float], share: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=1000, method="inclusive")[int(share * 1000) - 1]


@dataclass(frozen=True)
class Figures:
    load: Load
    load_seconds: float  # first request scheduled → last answer
    drained: float  # last answer → checkpoint at the log's end
    client_cpu: float  # seconds of CPU this process spent during the load
    projected: tuple[int, float, float, float, dict[str, int]]
    max_lag: int


def run(settings: Settings, args: argparse.Namespace) -> Figures:
    count = int(args.rate * args.duration)
    plan = deliveries(int(args.rate) + count)
    secrets = {"HOOKLINE_STRIPE_SECRETS": SECRETS["stripe"],
               "HOOKLINE_CHAPA_SECRETS": SECRETS["chapa"],
               "HOOKLINE_BOOKINGS_SECRETS": SECRETS["bookings"],
               "HOOKLINE_TRANSACTIONS_SECRETS": SECRETS["transactions"]}
    projector = start_projector(settings, **secrets)
    try:
        ingest, port = start_ingest(env_for(settings, **secrets), args.workers, args.threads)
        try:
            baseline = warm_up(settings, port, plan[: int(args.rate)], args.rate)
            return measure(settings, Load(port, plan[int(args.rate):], args.rate), baseline)
        finally:
            stop(ingest)
    finally:
        stop(projector)


def measure(settings: Settings, load: Load, baseline: int) -> Figures:
    lag = Lag(settings)
    lag.start()
    try:
        cpu = time.process_time()
        stopped = load.run()
        cpu = time.process_time() - cpu
        drained_at = lag.caught_up_at(log_end(settings), DRAIN_SECONDS)
        lag.done.wait(1.0)  # a second of tail on the plot
    finally:
        lag.done.set()
        lag.join()
    if lag.error is not None:
        raise lag.error
    figures = Figures(load, stopped - load.started, max(0.0, drained_at - stopped), cpu,
                      latencies(settings, baseline),
                      max((n for _, n in lag.samples), default=0))
    plot(lag.samples, delays(settings, baseline, load.wall_started), load,
         figures.load_seconds, figures.drained)
    return figures


def table(figures: Figures, args: argparse.Namespace) -> str:
    results = figures.load.results
    statuses = [status for _, _, status, _ in results]
    taken = [took * 1000 for _, took, _, _ in results]
    late = sum(1 for *_, behind in results if behind > 0.005)
    count, p50, p99, worst, outcomes = figures.projected
    return "\n".join([
        "| figure | value |", "|---|---|",
        f"| target rate | {args.rate:,.0f} requests/s for {args.duration} s |",
        f"| achieved rate | {len(results) / figures.load_seconds:,.0f} requests/s "
        f"({len(results):,} requests, {late:,} started > 5 ms behind schedule) |",
        f"| this client's CPU during the load | "
        f"{figures.client_cpu / figures.load_seconds:.0%} of one core |",
        f"| non-2xx | {sum(1 for s in statuses if s and not 200 <= s < 300)} "
        f"(no answer: {statuses.count(0)}) |",
        f"| HTTP latency p50 / p99 / max | {percentile(taken, 0.5):.1f} / "
        f"{percentile(taken, 0.99):.1f} / {max(taken, default=0):.1f} ms |",
        f"| projected_at - received_at p50 / p99 / max | {p50:.0f} / {p99:.0f} / {worst:.0f} ms "
        f"(over {count:,} records) |",
        f"| largest lag sampled | {figures.max_lag:,} records |",
        f"| lag back to zero after the load stopped | {figures.drained * 1000:.0f} ms |",
        f"| outcomes | {outcomes} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    exit_on_sigterm()
    with scratch("bench_e2e") as settings:
        figures = run(settings, args)
    record("End to end at a constant rate",
           f"python -m bench.end_to_end --rate {args.rate:g} --duration {args.duration} "
           f"--workers {args.workers} --threads {args.threads}",
           table(figures, args),
           f"![consumer lag and per-record delay over time]({Path(PLOT).name})\n\n"
           "Mixed signed webhooks (transactions, Stripe, Chapa, bookings; 5% redeliveries) from "
           "an open-loop client of 32 threads on loopback, after one second of warm-up that is "
           "left out of the figures; the projector runs throughout. projected_at is stamped "
           "when the batch holding the record starts projecting; its commit follows within the "
           "batch. Lag = the log's end (followed by a consumer tailing the stream) - the "
           "projector's checkpoint, sampled every 0.5 s; the time back to zero comes from "
           "polling the checkpoint every 20 ms against the final log end offset.")


if __name__ == "__main__":
    main()
