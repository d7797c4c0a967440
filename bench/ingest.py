"""Ingest throughput and latency against the ceiling, side by side in one run.

    python -m bench.ingest [--duration 20] [--workers 2] [--threads 16]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from bench.common import (
    AMQP_URL,
    ROOT,
    children,
    cpu_seconds,
    env_for,
    hookline,
    listener,
    record,
    rss_mb,
    scratch,
    wait_http,
)
from hookline.senders.signatures import sign_standard_webhooks

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LUA = ROOT / "bench" / "ingest.lua"
BROKER_PORT = urlsplit(AMQP_URL).port or 5672


def wrk(url: str, connections: int, duration: int, signed_file: Path | None) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
            "-s", str(LUA), url, "--", uuid.uuid4().hex[:8]]
    if signed_file:
        args.append(str(signed_file))
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def presign(count: int) -> Path:
    now = int(time.time())
    path = Path(tempfile.mkstemp(prefix="hookline-signed-", suffix=".tsv")[1])
    with path.open("w") as out:
        for n in range(count):
            body = orjson.dumps({"transaction_id": f"s-{uuid.uuid4().hex}", "amount": "12.50",
                                 "source_account": "acct-a", "destination_account": "acct-b",
                                 "currency": "USD"})
            msg_id = f"msg_{n}_{uuid.uuid4().hex[:10]}"
            signature = sign_standard_webhooks(SECRET, msg_id, now, body)
            out.write(f"{msg_id}\t{now}\t{signature}\t{body.decode()}\n")
    return path


def serve(kind: str, env: dict[str, str], port: int, workers: int, threads: int
          ) -> subprocess.Popen[bytes]:
    if kind == "ceiling":
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "bench.ceiling:create_app()", "-b",
             f"127.0.0.1:{port}", "-w", str(workers), "--threads", str(threads),
             "-k", "gthread", "--keep-alive", "5", "--reuse-port", "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True)
    else:
        process = hookline("ingest", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                           "--threads", str(threads), env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/" + ("readyz" if kind != "ceiling" else ""))
    except RuntimeError:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def measure(kind: str, env: dict[str, str], args: argparse.Namespace, port: int,
            signed: Path | None) -> list[tuple[str, int, dict[str, float]]]:
    process = serve(kind, env, port, args.workers, args.threads)
    try:
        url = f"http://127.0.0.1:{port}"
        wrk(url, 32, 3, signed)  # warm-up: connections, imports, JIT-free caches
        rows = [(kind, c, costed(process.pid, url, c, args.duration, signed)) for c in (32, 4)]
        rss = max((rss_mb(pid) for pid in children(process.pid)), default=0.0)
        for _, _, result in rows:
            result["worker_rss_mb"] = rss
        return rows
    finally:
        stop(process)


def costed(master: int, url: str, connections: int, duration: int, signed: Path | None
           ) -> dict[str, float]:
    """wrk's figures, with the CPU the workers and the broker spent per request meanwhile."""
    workers, broker = children(master), listener(BROKER_PORT)
    pids = [*workers, *([broker] if broker else [])]
    before = {pid: cpu_seconds(pid) for pid in pids}
    result = wrk(url, connections, duration, signed)
    spent = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
    per_request = 1e6 / max(result["requests"], 1)
    result["worker_cpu_us"] = sum(spent[pid] for pid in workers) * per_request
    result["broker_cpu_us"] = spent[broker] * per_request if broker else float("nan")
    return result


def table(rows: list[tuple[str, int, dict[str, float]]], ceiling: dict[int, float]) -> str:
    lines = ["| server | connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx "
             "| socket errors | vs ceiling | worker CPU µs/request | broker CPU µs/request "
             "| worker RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, connections, r in rows:
        ratio = r["rps"] / ceiling[connections]
        lines.append(
            f"| {kind} | {connections} | {r['rps']:,.0f} | {r['p50'] / 1000:.1f} | "
            f"{r['p90'] / 1000:.1f} | {r['p99'] / 1000:.1f} | {r['max'] / 1000:.1f} | "
            f"{r['non2xx']} | {r['socket_errors']} | {ratio:.0%} | {r['worker_cpu_us']:,.0f} | "
            f"{r['broker_cpu_us']:,.0f} | {r['worker_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    signed = presign(200_000)
    with scratch("bench_ingest") as settings:
        plain = env_for(settings, HOOKLINE_TRANSACTIONS_UNSIGNED="allow")  # measured unsigned
        secured = env_for(settings, HOOKLINE_TRANSACTIONS_SECRETS=SECRET)
        rows = measure("ceiling", plain, args, 18600, None)
        rows += measure("hookline unsigned", plain, args, 18601, None)
        rows += measure("hookline signed", secured, args, 18602, signed)
    signed.unlink()
    ceiling = {c: r["rps"] for kind, c, r in rows if kind == "ceiling"}
    record("Ingest throughput and latency",
           f"python -m bench.ingest --duration {args.duration} --workers {args.workers} "
           f"--threads {args.threads}",
           table(rows, ceiling),
           "wrk -t2 on loopback, unique ids; the ceiling is a bare Flask app under the same "
           "gunicorn configuration that parses the JSON and answers 202. CPU per request: the "
           "user + system time the workers (and the RabbitMQ node) spent during the run, over "
           "the requests answered; on two shared cores it is the steadier figure of the two.")


if __name__ == "__main__":
    main()
