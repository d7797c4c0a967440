"""Memory over a long run: the projector's RSS from offset 0 over many records, then each
ingest worker's RSS over many requests; start, peak, end, and whether it stays flat.

    python -m bench.memory [--records 1000000] [--requests 200000] [--interval 2]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass, field

import psycopg

from bench.common import (
    children,
    env_for,
    exit_on_sigterm,
    reading_process,
    record,
    rss_mb,
    scratch,
    start_ingest,
    start_projector,
    stop,
)
from bench.ingest import wrk
from bench.projection import append
from hookline.config import Settings

SLICE_SECONDS = 10  # wrk runs in slices until enough requests were sent
MAX_INGEST_SECONDS = 1800
CHECKPOINT = "SELECT coalesce(max(last_offset), -1) FROM consumer_offsets"


@dataclass
class Series:
    """RSS samples of one process: (seconds since its phase started, MB)."""

    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    peak: float = 0.0  # VmHWM at the end: the true peak, between samples too

    def second_half(self) -> tuple[float, float]:
        """(growth in MB fitted over the second half of the run, slope in MB/min)."""
        end = self.samples[-1][0]
        half = [(t, mb) for t, mb in self.samples if t >= end / 2]
        if len(half) < 3:
            return 0.0, 0.0
        slope = statistics.linear_regression([t for t, _ in half], [mb for _, mb in half]).slope
        return slope * (end - half[0][0]), slope * 60

    def row(self, run: str, target: float) -> str:
        growth, per_minute = self.second_half()
        flat = "yes" if growth <= max(5.0, 0.03 * self.samples[-1][1]) else "**no**"
        within = "yes" if self.peak <= target else "**no**"
        return (f"| {self.name} | {run} | {self.samples[0][1]:.0f} | {self.peak:.0f} | "
                f"{self.samples[-1][1]:.0f} | {growth:+.1f} | {per_minute:+.2f} | {flat} | "
                f"≤ {target:.0f} MB: {within} |")


def projector_run(settings: Settings, last: int, interval: float
                  ) -> tuple[list[Series], float]:
    """Project offsets 0..last, sampling the RSS of the projector and of its reading process;
    returns both series and records/s."""
    series, reading = Series("projector"), Series("projector's reading process")
    process = start_projector(settings)
    started = time.perf_counter()
    child: int | None = None
    deadline = started + 120 + (last + 1) / 200
    try:
        with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
            while True:
                row = conn.execute(CHECKPOINT).fetchone()
                checkpoint = row[0] if row else -1
                child = child or reading_process(process.pid)  # looked up until found
                if checkpoint >= 0 and child:  # projecting: imports, connections are behind it
                    at = time.perf_counter() - started
                    series.samples.append((at, rss_mb(process.pid)))
                    reading.samples.append((at, rss_mb(child)))
                    reading.peak = max(reading.peak, rss_mb(child, "VmHWM"))
                if checkpoint >= last:
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"the projector exited with {process.returncode}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the projector reached only offset {checkpoint}")
                time.sleep(interval)  # the sampling period
        series.peak = rss_mb(process.pid, "VmHWM")
    finally:
        stop(process)
    return [series, reading], (last + 1) / (time.perf_counter() - started)


class WorkerSampler(threading.Thread):
    """Every `interval` seconds, the RSS of each worker of a gunicorn arbiter."""

    def __init__(self, arbiter: int, interval: float) -> None:
        super().__init__(name="rss", daemon=True)
        self.arbiter, self.interval = arbiter, interval
        self.done = threading.Event()
        self.series: dict[int, Series] = {}
        self.started = time.perf_counter()

    def run(self) -> None:
        while True:
            for pid in children(self.arbiter):
                try:
                    mb, peak = rss_mb(pid), rss_mb(pid, "VmHWM")
                except OSError:
                    continue  # a worker that exited between the listing and the read
                if mb:
                    series = self.series.setdefault(pid, Series(f"ingest worker {pid}"))
                    series.samples.append((time.perf_counter() - self.started, mb))
                    series.peak = max(series.peak, peak)
            if self.done.wait(self.interval):
                return


def ingest_run(settings: Settings, requests: int, interval: float, workers: int,
               threads: int) -> tuple[list[Series], int, int, float]:
    """wrk slices until `requests` were sent; (worker series, requests, not 2xx, seconds)."""
    process, port = start_ingest(env_for(settings, HOOKLINE_TRANSACTIONS_UNSIGNED="allow"),
                                 workers, threads)
    sent = failed = 0
    try:
        sampler = WorkerSampler(process.pid, interval)
        sampler.start()
        try:
            while sent < requests and time.perf_counter() - sampler.started < MAX_INGEST_SECONDS:
                result = wrk(f"http://127.0.0.1:{port}", 32, SLICE_SECONDS, None)
                sent += int(result["requests"])
                failed += int(result["non2xx"] + result["socket_errors"])
        finally:
            sampler.done.set()
            sampler.join()
    finally:
        stop(process)
    return list(sampler.series.values()), sent, failed, time.perf_counter() - sampler.started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    exit_on_sigterm()
    with scratch("bench_memory") as settings:
        appending = time.perf_counter()
        last = append(settings, args.records)[0]  # one partition
        appending = time.perf_counter() - appending
        projector, rate = projector_run(settings, last, args.interval)
        workers, sent, failed, seconds = ingest_run(settings, args.requests, args.interval,
                                                    args.workers, args.threads)
    rows = [p.row(f"{last + 1:,} records from offset 0 ({rate:,.0f}/s)", 250) for p in projector]
    rows += [w.row(f"{sent:,} requests in {seconds:.0f} s ({failed} not 2xx)", 150)
             for w in workers]
    record("Memory over a long run",
           f"python -m bench.memory --records {args.records} --requests {args.requests} "
           f"--interval {args.interval:g} --workers {args.workers} --threads {args.threads}",
           "\n".join(["| process | run | start MB | peak MB | end MB | growth over the second "
                      "half MB | slope MB/min | flat | target |",
                      "|---|---|---|---|---|---|---|---|---|", *rows]),
           f"RSS sampled every {args.interval:g} s; start is the first sample once the process "
           "works (the projector's first checkpoint, the ingest's readiness), peak is VmHWM. "
           "Growth is the least-squares slope over the second half of the run times its length; "
           "flat means at most 5 MB or 3%. Phases run one after the other: the projector over "
           f"mixed records appended beforehand ({appending:.0f} s to append), then wrk with 32 "
           f"connections against `hookline ingest` in {SLICE_SECONDS} s slices (unsigned "
           "transactions, unique ids).")


if __name__ == "__main__":
    main()
