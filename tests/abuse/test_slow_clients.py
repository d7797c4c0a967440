"""Slow clients (slowloris: requests sent in part, then silence) cannot hold ingest's threads:
each read from a client gives up after CLIENT_READ_TIMEOUT_SECONDS and the client is closed."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from processors.servers import CLIENT_READ_TIMEOUT_SECONDS
from tests.abuse.conftest import delete_stream
from tests.chaos import webhooks
from tests.conftest import AMQP_URL
from tests.processes import Pipeline, running_pipeline

THREADS = 4  # one worker of four threads: twice as many slow clients as threads
SLOW_CLIENTS = 2 * THREADS
MARGIN = 4.0  # seconds a busy two-core machine may add


@pytest.fixture(scope="module")
def small_ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    stream = f"hookline.test.{uuid.uuid4().hex[:12]}"
    env = {"HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream}
    work: Path = tmp_path_factory.mktemp("slow")
    try:
        with running_pipeline(env, work, parts=()) as pipeline:
            pipeline.start_ingest(workers=1, threads=THREADS)
            yield pipeline
    finally:
        delete_stream(stream)


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
