"""Running hookline's real processes for integration and end-to-end tests."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from hookline.senders.signatures import sign_standard_webhooks

T = TypeVar("T")
TOKEN = "test-operator-token-0001"
# the transactions secret every pipeline runs with unless a test says otherwise
TRANSACTIONS_SECRET = "whsec_" + base64.b64encode(b"transactions-test-secret-32bytes").decode()
# a variable's value in a test's settings that leaves it unset (a blank one stops the process)
UNSET = None
# for tests that post raw unsigned transactions and need no booking confirmed by them
UNSIGNED_TRANSACTIONS = {"HOOKLINE_TRANSACTIONS_SECRETS": UNSET,
                         "HOOKLINE_TRANSACTIONS_UNSIGNED": "allow"}
# every address `hookline up` binds: each test run takes free ports for all of them
UP_BINDS = ("INGEST", "API", "INGEST_INTERNAL", "API_INTERNAL", "PROJECTOR_METRICS",
            "MAILER_METRICS", "SCHEDULER_METRICS", "DEV_SMTP")


class NotYet(AssertionError):
    """Raised by a polled check that is not satisfied yet."""


def eventually(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll `check` until it stops failing (assertion, connection), or re-raise its failure."""
    for attempt in Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval),
                            retry=retry_if_exception_type((AssertionError, OSError)),
                            reraise=True):
        with attempt:
            return check()
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """One `hookline …` child process with its output in a log file."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        handle = self.log_path.open("ab")
        self.popen = subprocess.Popen([sys.executable, "-m", "hookline", *self.args],
                                      env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        handle.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn's workers too)."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Pipeline:
    """ingest + projector + api on free ports, against one test database and stream."""

    env: dict[str, str]
    workdir: Path
    ingest_url: str = ""
    ingest_workers: int = 0
    api_url: str = ""
    processes: dict[str, Process] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        process = Process([*args], {**self.env, **(env or {})},
                          self.workdir / f"{name}.log").start()
        self.processes[name] = process
        return process

    def start_ingest(self, workers: int = 2, threads: int = 16, wait: bool = True) -> Process:
        port = free_port()
        self.ingest_url = f"http://127.0.0.1:{port}"
        self.ingest_workers = workers
        process = self.start("ingest", "ingest", "--bind", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--threads", str(threads))
        if wait:
            self.wait_ingest()
        return process

    def wait_ingest(self) -> None:
        """Ready, and every worker forked: gunicorn forks them one after the other, and the
        first answers before the last exists."""
        eventually(lambda: _ok(self.http.get(f"{self.ingest_url}/readyz", timeout=2)), 30)
        master = self.processes["ingest"].popen
        assert master is not None
        eventually(lambda: _forked(master.pid, self.ingest_workers), 30)

    def start_projector(self) -> Process:
        return self.start("projector", "project")

    def start_mailer(self, name: str = "mailer") -> Process:
        return self.start(name, "mail",
                          env={"HOOKLINE_MAILER_METRICS_BIND": f"127.0.0.1:{free_port()}"})

    def start_scheduler(self, name: str = "scheduler") -> Process:
        return self.start(name, "schedule",
                          env={"HOOKLINE_SCHEDULER_METRICS_BIND": f"127.0.0.1:{free_port()}"})

    def start_api(self, wait: bool = True) -> Process:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        process = self.start("api", "api", "--bind", f"127.0.0.1:{port}")
        if wait:
            self.wait_api()
        return process

    def wait_api(self) -> None:
        eventually(lambda: _ok(self.http.get(f"{self.api_url}/healthz", timeout=2)), 30)

    def post(self, source: str, body: Any, headers: dict[str, str] | None = None,
             **kwargs: Any) -> requests.Response:
        """POST a JSON body; a transaction is signed with the pipeline's secret, if it has one
        and the caller did not sign it."""
        secret = self.env.get("HOOKLINE_TRANSACTIONS_SECRETS")
        if source == "transactions" and secret and "webhook-signature" not in (headers or {}):
            raw = kwargs.pop("data", None) or orjson.dumps(body)
            return self.http.post(f"{self.ingest_url}/v1/webhooks/{source}", data=raw,
                                  headers={**signed_transaction(secret, raw), **(headers or {})},
                                  timeout=30, **kwargs)
        return self.http.post(f"{self.ingest_url}/v1/webhooks/{source}", json=body,
                              headers=headers, timeout=30, **kwargs)

    def get(self, path: str, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.get(f"{self.api_url}{path}", headers=headers, timeout=10)

    def stop_all(self) -> None:
        self.http.close()
        for process in self.processes.values():
            if process.alive:
                assert process.popen is not None
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            with suppress(subprocess.TimeoutExpired):
                process.stop()

    def outputs(self) -> str:
        return "\n".join(f"--- {name}\n{p.output()[-4000:]}" for name, p in self.processes.items())


def signed_transaction(secret: str, raw: bytes) -> dict[str, str]:
    """Standard Webhooks headers for a transaction body, a fresh message id each time."""
    msg_id, now = f"msg_{uuid.uuid4().hex}", int(time.time())
    return {"Content-Type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign_standard_webhooks(secret, msg_id, now, raw)}


def _forked(master: int, count: int) -> None:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) < count:
        raise NotYet(f"{len(children)} of {count} workers forked")


def _ok(response: requests.Response) -> None:
    if response.status_code != 200:
        raise NotYet(f"{response.status_code} {response.text[:200]}")


def process_env(settings_env: Mapping[str, str | None]) -> dict[str, str]:
    """The environment of a process under test: `settings_env` over the tests' defaults, a
    variable given as UNSET left out."""
    env: dict[str, str | None] = {
        k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(settings_env)
    env.setdefault("HOOKLINE_PROJECTOR_METRICS_BIND", f"127.0.0.1:{free_port()}")
    env.setdefault("HOOKLINE_OPERATOR_TOKENS", TOKEN)
    env.setdefault("HOOKLINE_TRANSACTIONS_SECRETS", TRANSACTIONS_SECRET)
    env["HOOKLINE_LOG_LEVEL"] = env.get("HOOKLINE_LOG_LEVEL") or "INFO"
    return {k: v for k, v in env.items() if v is not UNSET}


@contextmanager
def running_pipeline(env: dict[str, str], workdir: Path,
                     parts: tuple[str, ...] = ("ingest", "projector", "api")) -> Iterator[Pipeline]:
    pipeline = Pipeline(process_env(env), workdir)
    try:
        # all at once, then wait: each one's start-up is mostly its own imports
        if "ingest" in parts:
            pipeline.start_ingest(wait=False)
        if "projector" in parts:
            pipeline.start_projector()
        if "api" in parts:
            pipeline.start_api(wait=False)
        if "ingest" in parts:
            pipeline.wait_ingest()
        if "api" in parts:
            pipeline.wait_api()
        yield pipeline
    except BaseException:
        print(pipeline.outputs())
        raise
    finally:
        pipeline.stop_all()


def scalar(conn: psycopg.Connection, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def up_binds() -> dict[str, str]:
    """The HOOKLINE_*_BIND variables of `hookline up`, each on a free port."""
    return {f"HOOKLINE_{name}_BIND": f"127.0.0.1:{free_port()}" for name in UP_BINDS}


def output_lines(popen: subprocess.Popen[str]) -> list[str]:
    """A list that fills with the process's output lines as it prints them."""
    assert popen.stdout is not None
    stdout = popen.stdout
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                     daemon=True).start()
    return lines


def has_line(lines: list[str], text: str) -> None:
    assert any(text in line for line in lines), "".join(lines)[-2000:]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, in a session of its own or not (from /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with suppress(OSError):  # a task that has just ended
                children = {int(c) for c in (task / "children").read_text().split()}
                todo.extend(children - found)
                found |= children
    return found


def running(pids: Iterable[int]) -> set[int]:
    """Those of `pids` still running (a zombie has stopped: it only waits to be reaped)."""
    alive = set()
    for pid in pids:
        with suppress(OSError):
            # the state follows the parenthesised name, which may itself hold spaces
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(pid)
    return alive
