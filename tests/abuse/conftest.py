"""A running ingest and operator API with every secret set to a recognisable value, for the
abuse tests (on the machine's RabbitMQ and PostgreSQL: nothing here breaks them)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.chaos.webhooks import Delivery, Secrets
from tests.conftest import AMQP_URL, PG_ADMIN, copied_database, delete_streams, new_stream
from tests.operator_seed import seed
from tests.processes import Pipeline, Process, eventually, free_port, running_pipeline

CANARIES = Secrets(transactions="whsec_CANARYtransactSECRET0123456789ab",
                   stripe="whsec_CANARYstripeSECRET0123", chapa="CANARYchapaSECRET0123",
                   bookings="whsec_CANARYbookingsSECRET0123456789ab")
TOKEN = "CANARY-operator-token-0123456789"
STRIPE_TOLERANCE = 3  # seconds; short, so a captured request goes stale within a test


@dataclass
class Hostile:
    """ingest and api, and the database they serve."""

    pipeline: Pipeline
    database_url: str

    def post(self, delivery: Delivery, headers: dict[str, str] | None = None,
             **kwargs: Any) -> requests.Response:
        return self.pipeline.http.post(
            f"{self.pipeline.ingest_url}/v1/webhooks/{delivery.source}", data=delivery.body,
            headers=delivery.headers(CANARIES) if headers is None else headers, timeout=30,
            **kwargs)


@pytest.fixture(scope="session")
def seeded_database(template_database: str) -> Iterator[str]:
    """A database of its own with a few rows in every table; its URL."""
    with copied_database(template_database) as name:
        url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
        with psycopg.connect(url, autocommit=True) as conn:
            seed(conn, transactions=40, bookings=30, events=60, emails=30, references=10)
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def hostile(seeded_database: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Hostile]:
    stream = new_stream()
    env = {"HOOKLINE_DATABASE_URL": seeded_database, "HOOKLINE_AMQP_URL": AMQP_URL,
           "HOOKLINE_STREAM": stream, "HOOKLINE_OPERATOR_TOKENS": TOKEN,
           "HOOKLINE_STRIPE_TOLERANCE": f"{STRIPE_TOLERANCE}s", **CANARIES.env()}
    try:
        with running_pipeline(env, tmp_path_factory.mktemp("hostile"),
                              parts=("ingest", "api")) as pipeline:
            yield Hostile(pipeline, seeded_database)
    finally:
        delete_streams(stream)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Front:
    """`hookline front` before the hostile pipeline's ingest and api: the public addresses."""

    process: Process
    ingest_url: str
    api_url: str


@pytest.fixture(scope="session")
def fronted(hostile: Hostile) -> Iterator[Front]:
    pipeline = hostile.pipeline
    ingest, api = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    process = pipeline.start("front", "front", env={
        "HOOKLINE_INGEST_BIND": ingest, "HOOKLINE_API_BIND": api,
        "HOOKLINE_INGEST_INTERNAL_BIND": pipeline.ingest_url.removeprefix("http://"),
        "HOOKLINE_API_INTERNAL_BIND": pipeline.api_url.removeprefix("http://")})
    front = Front(process, f"http://{ingest}", f"http://{api}")
    eventually(lambda: answers_200(f"{front.ingest_url}/readyz"), 30)
    eventually(lambda: answers_200(f"{front.api_url}/readyz"), 30)
    yield front
    process.stop()


def answers_200(url: str) -> None:
    answer = requests.get(url, timeout=2)
    assert answer.status_code == 200, f"{url}: {answer.status_code}"


def address(url: str) -> tuple[str, int]:
    """(host, port) of a loopback http:// URL; the abuse tests never leave the machine."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1", url
    return host, int(port)


def all_accepted(url: str) -> None:
    """Fails while the listener at `url` has connections its server has not accepted yet."""
    port = f"{address(url)[1]:04X}"
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, _remote, state, queues = row.split()[1:5]
            # of a listening socket (0A), the receive queue is its backlog of connections
            if state == "0A" and local.endswith(f":{port}"):
                waiting += int(queues.split(":")[1], 16)
    assert waiting == 0, f"{waiting} connections not accepted yet"
