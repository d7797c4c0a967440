"""Slow clients on loopback, bounded in count and time: each sends a webhook request one byte
every few seconds, and opens a new connection when the server closes its own. Also measures
legitimate signed deliveries meanwhile.

    .venv/bin/python -m tests.abuse.slowloris     # the figures of docs/reliability.md
"""

from __future__ import annotations

import random
import selectors
import socket
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import requests

from tests.chaos import webhooks
from tests.chaos.webhooks import Secrets

REQUEST_HEAD = (b"POST /v1/webhooks/transactions HTTP/1.1\r\nHost: hookline\r\n"
                b"Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n")
REQUEST_BODY = b'{"transaction_id": "slow-' + b"x" * 4070 + b'"}'
LIMIT_CONNECTIONS = 1000  # a test harness, not a tool: never more than this
LIMIT_SECONDS = 120


@dataclass
class _Slow:
    sock: socket.socket
    pending: bytes  # what is still to send, one byte at a time
    due: float
    sent: bool = False  # anything yet


@dataclass
class SlowClients:
    """`count` connections to `address` (loopback only), each trickling one byte every
    `interval` seconds: half from the first byte, half after sending their headers at once."""

    address: tuple[str, int]
    count: int
    interval: float = 2.0
    held: list[int] = field(default_factory=list)  # open connections, sampled every second
    cut: int = 0  # connections the server closed
    timed_out: int = 0  # of those, answered 408
    sending: threading.Event = field(default_factory=threading.Event)  # all `count` have sent
    _senders: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SlowClients:
        assert self.address[0] == "127.0.0.1"
        assert self.count <= LIMIT_CONNECTIONS
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _open(self, n: int, now: float) -> _Slow:
        sock = socket.create_connection(self.address, timeout=5)
        sock.setblocking(False)
        slow = _Slow(sock, REQUEST_HEAD + REQUEST_BODY, now + random.uniform(0, self.interval))
        if n % 2:  # the headers at once: the deadline must cover the body too
            sock.sendall(REQUEST_HEAD)
            slow.pending = REQUEST_BODY
            self._has_sent(slow)
        return slow

    def _has_sent(self, slow: _Slow) -> None:
        if not slow.sent:
            slow.sent, self._senders = True, self._senders + 1
            if self._senders >= self.count:
                self.sending.set()

    def _run(self) -> None:
        started = time.monotonic()
        poller = selectors.DefaultSelector()
        for n in range(self.count):
            poller.register((slow := self._open(n, started)).sock, selectors.EVENT_READ, slow)
        sampled = started
        while not self._stop.is_set() and time.monotonic() - started < LIMIT_SECONDS:
            for key, _ in poller.select(0.05):
                self._closed_by_server(poller, key.data)
            now = time.monotonic()
            for key in list(poller.get_map().values()):
                slow: _Slow = key.data
                if slow.due <= now and slow.pending:
                    try:
                        slow.sock.send(slow.pending[:1])
                    except OSError:
                        self._closed_by_server(poller, slow)
                        continue
                    slow.pending, slow.due = slow.pending[1:], slow.due + self.interval
                    self._has_sent(slow)
            if now - sampled >= 1:
                self.held.append(len(poller.get_map()))
                sampled = now
        for key in list(poller.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        poller.close()

    def _closed_by_server(self, poller: selectors.BaseSelector, slow: _Slow) -> None:
        try:
            answer = slow.sock.recv(4096)
        except OSError:
            answer = b""
        poller.unregister(slow.sock)
        slow.sock.close()
        self.cut += 1
        self.timed_out += answer.startswith(b"HTTP/1.1 408")
        if self._stop.is_set():
            return
        try:  # a slowloris client comes straight back
            again = self._open(self.cut, time.monotonic())
        except OSError:
            return
        poller.register(again.sock, selectors.EVENT_READ, again)


@dataclass
class Deliveries:
    """Legitimate signed deliveries, one at a time, each on a new connection as senders do."""

    url: str
    secrets: Secrets
    timeout: float = 15.0
    seconds: list[float] = field(default_factory=list)  # answered 202, how long each took
    failed: list[str] = field(default_factory=list)

    def send(self, seconds: float, every: float) -> None:
        """One delivery every `every` seconds (or as soon as the previous one is answered),
        for `seconds`."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            delivery = webhooks.transaction(f"legit-{uuid.uuid4().hex}")
            started = time.monotonic()
            try:
                answer = requests.post(f"{self.url}/v1/webhooks/transactions",
                                       data=delivery.body, headers=delivery.headers(self.secrets),
                                       timeout=self.timeout)
                took = time.monotonic() - started
                if answer.status_code == 202:
                    self.seconds.append(took)
                else:
                    self.failed.append(f"{answer.status_code} after {took:.1f} s")
            except requests.RequestException as exc:
                self.failed.append(f"{type(exc).__name__} after {time.monotonic() - started:.1f} s")
            time.sleep(max(0.0, every - (time.monotonic() - started)))  # the delivery rate

    def summary(self) -> str:
        if not self.seconds:
            return f"0 answered, {len(self.failed)} not (within {self.timeout:.0f} s)"
        return (f"{len(self.seconds)} answered 202, {len(self.failed)} not "
                f"(within {self.timeout:.0f} s); "
                f"median {statistics.median(self.seconds) * 1000:.0f} ms, "
                f"max {max(self.seconds) * 1000:.0f} ms")


def under_attack(url: str, secrets: Secrets, connections: int, seconds: float,
                 every: float = 0.5) -> tuple[Deliveries, Deliveries, SlowClients]:
    """Deliveries without the attack, then with `connections` slow clients for `seconds`."""
    from tests.abuse.conftest import address

    calm = Deliveries(url, secrets)
    calm.send(2, every=0.2)
    attacked = Deliveries(url, secrets)
    with SlowClients(address(url), connections) as slow:
        assert slow.sending.wait(LIMIT_SECONDS), "the slow clients never all sent a byte"
        attacked.send(seconds, every=every)
    return calm, attacked, slow


def main() -> None:
    """Measure through the front and directly against ingest (two workers of 16 threads)."""
    from tests.abuse.conftest import CANARIES
    from tests.conftest import AMQP_URL, delete_streams
    from tests.processes import eventually, free_port, running_pipeline

    stream = f"hookline.measure.{uuid.uuid4().hex[:12]}"
    front = f"127.0.0.1:{free_port()}"
    env = {"HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream, **CANARIES.env()}
    workdir = Path(f"/tmp/hookline-slowloris-{uuid.uuid4().hex[:8]}")
    workdir.mkdir()
    try:
        with running_pipeline(env, workdir, parts=("ingest",)) as pipeline:
            pipeline.start("front", "front", env={
                "HOOKLINE_INGEST_BIND": front, "HOOKLINE_API_BIND": f"127.0.0.1:{free_port()}",
                "HOOKLINE_INGEST_INTERNAL_BIND": pipeline.ingest_url.removeprefix("http://"),
                "HOOKLINE_API_INTERNAL_BIND": f"127.0.0.1:{free_port()}"})
            eventually(lambda: requests.get(f"http://{front}/healthz", timeout=2)
                       .raise_for_status(), 30)
            for name, url in (("front", f"http://{front}"), ("direct", pipeline.ingest_url)):
                calm, attacked, slow = under_attack(url, CANARIES, 200, 30)
                print(f"{name}: without the attack {calm.summary()}; with 200 slow clients "
                      f"{attacked.summary()}; connections held min {min(slow.held)} "
                      f"max {max(slow.held)}, closed by the server {slow.cut} "
                      f"({slow.timed_out} answered 408)", flush=True)
    finally:
        delete_streams(stream)


if __name__ == "__main__":
    main()
