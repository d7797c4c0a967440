"""What every benchmark shares: a throwaway database and stream, processes, the results file."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pika
import psycopg
from psycopg import sql

from hookline.config import OperatorToken, Settings
from hookline.db.schema import migrate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
BENCH_TOKEN = "bench-operator-token-0001"


@contextmanager
def scratch(prefix: str, partitions: int = 1) -> Iterator[Settings]:
    """A migrated database and an empty log (in `partitions` streams), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
                        amqp_url=AMQP_URL, stream=f"bench.{name}", partitions=partitions,
                        operator_tokens=(OperatorToken("bench", "operator", BENCH_TOKEN),))
    migrate(settings)
    try:
        yield settings
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        for stream in settings.streams:
            connection.channel().queue_delete(stream)
        connection.close()


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update({"HOOKLINE_DATABASE_URL": settings.database_url,
                "HOOKLINE_AMQP_URL": settings.amqp_url, "HOOKLINE_STREAM": settings.stream,
                "HOOKLINE_PARTITIONS": str(settings.partitions),
                "HOOKLINE_OPERATOR_TOKENS": BENCH_TOKEN, "HOOKLINE_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def hookline(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "hookline", *args], env=env,
                            start_new_session=True)


def start_projector(settings: Settings, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """`hookline project` with its metrics on a free port, so several can run at once."""
    return hookline("project", *args, env=env_for(
        settings, HOOKLINE_PROJECTOR_METRICS_BIND=f"127.0.0.1:{free_port()}", **extra))


def start_ingest(env: dict[str, str], workers: int, threads: int
                 ) -> tuple[subprocess.Popen[bytes], int]:
    """`hookline ingest` on a free port, ready for requests; the process and its port."""
    port = free_port()
    process = hookline("ingest", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                       "--threads", str(threads), env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        stop(process)
        raise
    return process, port


def stop(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM the process's group; SIGKILL it when it has not gone within `grace` seconds."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except ProcessLookupError:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a benchmark's finally blocks still clean up."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback)
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listener(port: int) -> int | None:
    """The pid of the process listening on local TCP `port` (the broker, to read its CPU)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for fields in map(str.split, Path(table).read_text().splitlines()[1:]):
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return None


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def reading_process(projector: int) -> int | None:
    """The pid of a projector's child that reads the log (not multiprocessing's tracker)."""
    for pid in children(projector):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip() or "uncommitted"


def record(title: str, command: str, table: str, notes: str = "") -> None:
    """Append one run's figures to bench/RESULTS.md and print them."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"\n## {title} — {when}\n\n"
               f"- command: `{command}`\n- commit: {commit()}\n- machine: {machine()}\n\n"
               f"{table}\n" + (f"\n{notes}\n" if notes else ""))
    print(section)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is one run, appended by the "
                           "benchmark that produced it.\n")
    with RESULTS.open("a") as results:
        results.write(section)
