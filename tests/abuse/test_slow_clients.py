"""Slow clients (slowloris: requests sent in part, then silence, or one byte at a time) cannot
hold ingest's or the operator API's threads: directly, each read from a client gives up after
CLIENT_READ_TIMEOUT_SECONDS; through the front, a request must arrive whole within
REQUEST_DEADLINE_SECONDS, and gunicorn only ever sees whole requests."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import requests

from hookline.web.front import REQUEST_DEADLINE_SECONDS
from hookline.web.servers import CLIENT_READ_TIMEOUT_SECONDS
from tests.abuse.conftest import (
    CANARIES,
    Front,
    Hostile,
    address,
    all_accepted,
)
from tests.abuse.slowloris import SlowClients, under_attack
from tests.chaos import webhooks
from tests.conftest import AMQP_URL, delete_streams, new_stream
from tests.processes import Pipeline, eventually, running_pipeline

THREADS = 4  # one worker of four threads: twice as many slow clients as threads
SLOW_CLIENTS = 2 * THREADS
MARGIN = 4.0  # seconds a busy two-core machine may add


@pytest.fixture(scope="module")
def small_ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    stream = new_stream()
    env = {"HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream}
    work: Path = tmp_path_factory.mktemp("slow")
    try:
        with running_pipeline(env, work, parts=()) as pipeline:
            pipeline.start_ingest(workers=1, threads=THREADS)
            yield pipeline
    finally:
        delete_streams(stream)


def open_slow(pipeline: Pipeline, kind: str) -> socket.socket:
    """A connection that sends part of a request and then nothing."""
    host, port = pipeline.ingest_url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=60)
    head = (b"POST /v1/webhooks/transactions HTTP/1.1\r\nHost: ingest\r\n"
            b"Content-Type: application/json\r\n")
    if kind == "body":
        client.sendall(head + b'Content-Length: 1000\r\n\r\n{"transaction_id": "slow')
    else:
        client.sendall(head + b"X-Half-A-Header: ")
    return client


def answer_of(client: socket.socket) -> tuple[bytes, float]:
    """What the server sent before closing (b"" for nothing), and when it closed."""
    received = b""
    while chunk := client.recv(4096):
        received += chunk
    client.close()
    return received, time.monotonic()


def test_slow_clients_are_cut_off_and_normal_requests_are_still_answered(
        small_ingest: Pipeline) -> None:
    slow = [open_slow(small_ingest, "body" if n % 2 else "headers")
            for n in range(SLOW_CLIENTS)]
    opened = time.monotonic()
    with ThreadPoolExecutor(SLOW_CLIENTS) as pool:
        ends = [pool.submit(answer_of, client) for client in slow]
        normal = [small_ingest.post("transactions", transaction_body(n)) for n in range(3)]
        answered = time.monotonic() - opened
        closed = [future.result() for future in ends]

    assert [r.status_code for r in normal] == [202] * 3
    # every thread is held at most one read timeout: two rounds of slow clients at worst
    assert answered < 2 * CLIENT_READ_TIMEOUT_SECONDS + MARGIN, f"answered after {answered:.1f} s"
    for received, at in closed:
        assert at - opened < 2 * CLIENT_READ_TIMEOUT_SECONDS + MARGIN
        assert received == b"" or received.startswith(b"HTTP/1.1 408"), received[:200]
    assert sum(received.startswith(b"HTTP/1.1 408") for received, _ in closed) == THREADS
    started = time.monotonic()
    assert small_ingest.post("transactions", transaction_body(99)).status_code == 202
    assert time.monotonic() - started < 2.0, "the threads were not freed"
    output = small_ingest.processes["ingest"].output()
    assert "Traceback" not in output
    assert "WORKER TIMEOUT" not in output


def transaction_body(n: int) -> dict[str, str]:
    body: dict[str, str] = orjson.loads(webhooks.transaction(f"slow-{uuid.uuid4().hex}-{n}").body)
    return body


# --- through the front, and the operator API ---------------------------------------------------

ATTACKERS = 200  # the figure
ATTACK_SECONDS = 24  # over two of the front's request deadlines: the attackers come back


def test_two_hundred_slow_clients_do_not_delay_a_signed_delivery_through_the_front(
        fronted: Front) -> None:
    calm, attacked, slow = under_attack(fronted.ingest_url, CANARIES, ATTACKERS, ATTACK_SECONDS)
    print(f"without the attack: {calm.summary()}; with {ATTACKERS} slow clients: "
          f"{attacked.summary()}; held {min(slow.held)}..{max(slow.held)}, cut {slow.cut}")

    assert calm.failed == []
    assert attacked.failed == []
    assert min(slow.held) >= ATTACKERS * 0.9, f"the attack was not held: {slow.held}"
    # the bound: within a second of what a delivery takes without the attack
    assert max(attacked.seconds) <= max(calm.seconds) + 1.0, attacked.summary()
    # and the slow ones were cut at the whole-request deadline, headers or body
    assert slow.timed_out >= ATTACKERS, f"{slow.cut} cut, {slow.timed_out} answered 408"


def test_a_request_not_complete_within_the_deadline_is_answered_408_by_the_front(
        fronted: Front) -> None:
    with SlowClients(address(fronted.ingest_url), 2, interval=1.0) as slow:
        eventually(lambda: _at_least(slow.timed_out, 2), REQUEST_DEADLINE_SECONDS + MARGIN)


def _at_least(value: int, expected: int) -> None:
    assert value >= expected, f"{value} of {expected}"


def silent_connections(url: str, count: int, kind: str) -> list[socket.socket]:
    """Connections that send nothing at all, or a request line and then nothing."""
    clients = [socket.create_connection(address(url), timeout=30) for _ in range(count)]
    if kind == "partial":
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: api\r\n")
    return clients


@pytest.mark.parametrize("kind", ["silent", "partial"])
@pytest.mark.parametrize("path", ["direct", "front"])
def test_idle_connections_do_not_block_the_operator_api(
        hostile: Hostile, fronted: Front, path: str, kind: str) -> None:
    url = hostile.pipeline.api_url if path == "direct" else fronted.api_url
    idle = silent_connections(url, 10, kind)  # more than the API's threads
    try:
        eventually(lambda: all_accepted(url), timeout=10)  # every one accepted and waiting
        started = time.monotonic()
        for probe in ("/healthz", "/readyz"):
            assert requests.get(f"{url}{probe}", timeout=30).status_code == 200
        waited = time.monotonic() - started
    finally:
        for client in idle:
            client.close()
    # straight through the front; directly, after the idle ones' read timeout at worst
    bound = 1.0 if path == "front" else CLIENT_READ_TIMEOUT_SECONDS + MARGIN
    assert waited < bound, f"answered after {waited:.1f} s"
