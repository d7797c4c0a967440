"""Private RabbitMQ and PostgreSQL instances to break, and helpers to fill and read the log."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg

from hookline.config import Settings
from hookline.log.envelope import decode, encode, utcnow
from hookline.log.publisher import Publisher
from hookline.log.reader import StreamReader
from hookline.log.topology import log_end_offset, open_connection

log = logging.getLogger(__name__)
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 90) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                           f"{done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done.stdout


def _private_dir(prefix: str, user: str) -> Path:
    """A directory in /tmp the service's user can reach (pytest's are 0700), marked as ours."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / "owner").write_text(str(os.getpid()))
    shutil.chown(path, user, user)
    return path


def reap_orphans() -> None:
    """Stop the private instances of test sessions that were killed before their teardown."""
    for owner in Path(tempfile.gettempdir()).glob("hookline-*-*/owner"):
        if _alive(int(owner.read_text() or 0)):
            continue
        workdir = owner.parent
        log.warning("stopping the private instance a killed test session left in %s", workdir)
        if workdir.name.startswith("hookline-rabbit-") and (workdir / "node").exists():
            PrivateBroker(workdir=workdir, node=(workdir / "node").read_text()).destroy()
        elif workdir.name.startswith("hookline-pg-"):
            PrivatePostgres(workdir=workdir).destroy()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def restartable_port() -> int:
    """A free port below the kernel's ephemeral range, for a server these tests stop and start
    again: a port the kernel hands out could be taken by any outgoing connection meanwhile, and
    the restart then fails to listen (seen: RabbitMQ's start_app with eaddrinuse)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(20_000, min(low, 32_768)), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class PrivateBroker:
    """A RabbitMQ node of its own, on its own ports and data directory, to stop at will."""

    workdir: Path = field(default_factory=lambda: _private_dir("hookline-rabbit-", "rabbitmq"))
    node: str = field(default_factory=lambda: f"hookline_faults_{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=restartable_port)
    dist_port: int = field(default_factory=restartable_port)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def env(self) -> dict[str, str]:
        base = self.workdir
        return {**os.environ,
                "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"), "RABBITMQ_PID_FILE": str(base / "pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                # the machine's env file names the shared node; this one names nothing
                "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf")}

    def start(self) -> PrivateBroker:
        files = {"enabled_plugins": "",
                 "rabbitmq.conf": f"listeners.tcp.default = 127.0.0.1:{self.port}\n",
                 "rabbitmq-env.conf": "ERL_EPMD_ADDRESS=127.0.0.1\n", "node": self.node}
        for name, text in files.items():
            (self.workdir / name).write_text(text)
            shutil.chown(self.workdir / name, "rabbitmq", "rabbitmq")
        _run(["rabbitmq-server", "-detached"], self.env)
        self.ctl("wait", str(self.workdir / "pid"), "--timeout", "60")
        self.ctl("await_startup", "--timeout", "60")
        return self

    def ctl(self, *args: str) -> str:
        """rabbitmqctl against this node only, never the machine's shared one."""
        return _run(["rabbitmqctl", "-n", self.node, "-q", *args], self.env)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        """Start the broker's application again (a no-op when it runs) and wait for it."""
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "60")

    def close_connections(self, client_name: str) -> int:
        """Close every client connection named `client_name`; how many were closed."""
        listing = self.ctl("list_connections", "pid", "client_properties", "--no-table-headers")
        pids = [line.split("\t", 1)[0] for line in listing.splitlines()
                if f'"{client_name}"' in line]
        for pid in pids:
            self.ctl("close_connection", pid, "fault injected by a test")
        return len(pids)

    def destroy(self) -> None:
        try:
            self.ctl("stop")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log.warning("private broker %s did not stop: %s", self.node, exc)
            self._kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill(self) -> None:
        """SIGKILL the node's VM, once sure the pid in its pid file is still that VM (the node's
        name is in the VM's environment, not its command line)."""
        pid_file = self.workdir / "pid"
        pid = pid_file.read_text().strip() if pid_file.exists() else ""
        environ = Path(f"/proc/{pid}/environ")
        marker = f"RABBITMQ_NODENAME={self.node}\0".encode()
        if pid.isdigit() and environ.exists() and marker in environ.read_bytes():
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own, on its own port, to stop and start at will."""

    workdir: Path = field(default_factory=lambda: _private_dir("hookline-pg-", "postgres"))
    port: int = field(default_factory=restartable_port)

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def initdb(self) -> PrivatePostgres:
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--no-sync")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options,
                          "-l", str(self.workdir / "postgres.log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def ensure_running(self) -> None:
        try:
            self._as_postgres("pg_ctl", "-D", str(self.data), "status")
        except RuntimeError:
            self.start()

    def destroy(self) -> None:
        try:
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except RuntimeError:
            log.info("private PostgreSQL was not running")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _as_postgres(self, tool: str, *args: str) -> str:
        return _run(["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args])


# -- the log -------------------------------------------------------------------------------


def transaction(n: int) -> dict[str, str]:
    """A distinct transaction (n > 0) whose amount differs per n: a sum shows a double or a loss."""
    return {"transaction_id": f"tx-{n}", "source_account": f"acct-{n}",
            "destination_account": "acct-hotel", "amount": f"{n}.{n % 100:02d}",
            "currency": "EUR"}


def publish_backlog(settings: Settings, numbers: Iterable[int]) -> list[dict[str, str]]:
    """Append one confirmed transaction record per number, many in flight; the bodies."""
    bodies = [transaction(n) for n in numbers]
    publisher = Publisher(settings, name="faults-backlog")
    publisher.start()
    assert publisher.wait_ready(30), "the backlog publisher could not reach the broker"

    def publish(body: dict[str, str]) -> None:
        received_at = utcnow()
        key = f"transactions:{body['transaction_id']}"
        record = encode(key, "transactions", "transaction.succeeded", body["transaction_id"],
                        received_at, json.dumps(body).encode())
        publisher.publish(settings.stream, key, record, received_at)

    try:
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(publish, bodies))
    finally:
        publisher.stop()
    return bodies


def log_ids(settings: Settings, timeout: float = 60) -> list[str]:
    """Every envelope id in the stream, from offset 0 to its current end, in offset order."""
    connection = open_connection(settings, "faults-end")
    try:
        end = log_end_offset(connection, settings.stream)
    finally:
        connection.close()
    ids: list[str] = []
    deadline = time.monotonic() + timeout
    reader = StreamReader(settings, 0, 500, "faults-reader", should_stop=lambda: (
        reader.next_offset > end or time.monotonic() > deadline))
    try:
        for batch in reader.batches():
            ids.extend(decode(record.body).id for record in batch.records)
            reader.ack(batch)
    finally:
        reader.close()
    assert reader.next_offset > end, f"read the log only up to {reader.next_offset - 1} of {end}"
    return ids


# -- the projections -----------------------------------------------------------------------


@dataclass(frozen=True)
class Projected:
    checkpoint: int | None
    events: int
    distinct_ids: int
    outcomes: dict[str, int]
    transactions: int
    total: Decimal


def projected(database_url: str, consumer: str = "projector") -> Projected:
    """What the projector committed, read on a fresh connection (the server may have restarted)."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT last_offset FROM consumer_offsets WHERE consumer = %s",
                           (consumer,)).fetchone()
        events = conn.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
        outcomes: dict[str, int] = dict(conn.execute(
            "SELECT outcome, count(*) FROM events GROUP BY outcome").fetchall())
        totals = conn.execute(
            "SELECT count(*), coalesce(sum(amount), 0) FROM transactions").fetchone()
    assert events is not None
    assert totals is not None
    return Projected(None if row is None else int(row[0]), int(events[0]), int(events[1]),
                     outcomes, int(totals[0]), Decimal(totals[1]))


def expected(bodies: Iterable[dict[str, str]]) -> tuple[int, Decimal]:
    """How many transactions and what sum projecting these bodies exactly once gives."""
    amounts = [Decimal(body["amount"]) for body in bodies]
    return len(amounts), sum(amounts, Decimal(0))
