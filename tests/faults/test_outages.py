"""RabbitMQ or PostgreSQL going away and coming back, on private instances the tests own."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
import requests

from hookline.config import Settings
from tests.faults.support import (
    PrivateBroker,
    PrivatePostgres,
    expected,
    log_ids,
    projected,
    transaction,
)
from tests.processes import UNSIGNED_TRANSACTIONS, NotYet, Pipeline, eventually, running_pipeline

BOUND = 2.0  # HOOKLINE_PUBLISH_TIMEOUT for these tests
MARGIN = 2.0  # what a busy two-core machine adds to the bound


@dataclass(frozen=True)
class Answer:
    number: int
    status: int
    seconds: float
    retry_after: str | None

    @property
    def id(self) -> str:
        return f"transactions:tx-{self.number}"


def post(pipeline: Pipeline, number: int) -> Answer:
    started = time.monotonic()
    response = requests.post(f"{pipeline.ingest_url}/v1/webhooks/transactions",
                             json=transaction(number), timeout=30)
    if response.status_code == 202:
        assert response.json()["id"] == f"transactions:tx-{number}"
    return Answer(number, response.status_code, time.monotonic() - started,
                  response.headers.get("Retry-After"))


def post_all(pipeline: Pipeline, numbers: Iterable[int]) -> list[Answer]:
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda n: post(pipeline, n), numbers))


def post_until_accepted(pipeline: Pipeline, number: int, timeout: float = 30) -> Answer:
    """What a sender does with a 503: try again until it is accepted."""
    def accepted() -> Answer:
        answer = post(pipeline, number)
        if answer.status != 202:
            raise NotYet(f"tx-{number}: {answer.status}")
        return answer
    return eventually(accepted, timeout=timeout, interval=0.2)


def readiness(pipeline: Pipeline) -> requests.Response:
    return requests.get(f"{pipeline.ingest_url}/readyz", timeout=10)


class Traffic(threading.Thread):
    """A sender posting new transactions without pause through the whole outage."""

    def __init__(self, pipeline: Pipeline, first: int) -> None:
        super().__init__(name="traffic", daemon=True)
        self.pipeline, self.next = pipeline, first
        self.answers: list[Answer] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.answers.append(post(self.pipeline, self.next))
            self.next += 1
            self.stopping.wait(0.02)  # pacing, so the broker's tools get the CPU they need

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stopping.set()
        self.join(timeout=60)


@pytest.mark.disruptive
def test_broker_outage_answers_503_within_the_bound_and_ingest_recovers_by_itself(
        broker: PrivateBroker, private_stream: str, tmp_path: Path) -> None:
    env = {"HOOKLINE_AMQP_URL": broker.url, "HOOKLINE_STREAM": private_stream,
           "HOOKLINE_PUBLISH_TIMEOUT": str(BOUND), **UNSIGNED_TRANSACTIONS}
    with running_pipeline(env, tmp_path, parts=("ingest",)) as pipeline:
        ingest = pipeline.processes["ingest"]
        before = post_all(pipeline, range(1, 51))
        assert [a.status for a in before] == [202] * 50

        with Traffic(pipeline, first=100_001) as traffic:
            eventually(lambda: _accepted_some(traffic))
            broker.stop_app()

            def unready() -> None:
                answer = readiness(pipeline)
                assert answer.status_code == 503, answer.text
                assert answer.headers.get("Retry-After")
            eventually(unready)
            during = [post(pipeline, n) for n in range(51, 71)]

            broker.start_app()
            restarted = time.monotonic()
            first_again = post_until_accepted(pipeline, 71)
            recovered_in = time.monotonic() - restarted
            after = [post_until_accepted(pipeline, n) for n in range(72, 122)]
            eventually(lambda: _ok(readiness(pipeline)))

        assert ingest.alive, "ingest was not restarted; it must still be the same process"
        assert ingest.popen is not None
        assert ingest.popen.returncode is None

    assert [(a.status, bool(a.retry_after)) for a in during] == [(503, True)] * 20
    assert recovered_in < 15, f"accepted again only {recovered_in:.1f} s after the broker"
    seen = before + during + [first_again, *after] + traffic.answers
    assert {a.status for a in seen} <= {202, 503}
    assert all(a.retry_after for a in seen if a.status == 503)
    slowest = max(seen, key=lambda a: a.seconds)
    assert slowest.seconds < BOUND + MARGIN, f"an answer took {slowest}"
    statuses = [a.status for a in traffic.answers]
    assert 503 in statuses, "the traffic did not meet the outage"
    assert statuses[-1] == 202, "the traffic did not live through the outage"

    in_log = set(log_ids(Settings(amqp_url=broker.url, stream=private_stream)))
    accepted = {a.id for a in seen if a.status == 202}
    assert accepted - in_log == set(), "a delivery answered 202 is missing from the log"


def _accepted_some(traffic: Traffic) -> None:
    assert any(a.status == 202 for a in traffic.answers)


def _ok(response: requests.Response) -> None:
    assert response.status_code == 200, response.text


@pytest.mark.disruptive
def test_database_outage_keeps_ingest_accepting_and_the_projector_catches_up_exactly_once(
        broker: PrivateBroker, cluster: PrivatePostgres, private_database: str,
        private_stream: str, tmp_path: Path) -> None:
    env = {"HOOKLINE_AMQP_URL": broker.url, "HOOKLINE_STREAM": private_stream,
           "HOOKLINE_DATABASE_URL": private_database, "HOOKLINE_PROJECTOR_BATCH": "20",
           **UNSIGNED_TRANSACTIONS}
    with running_pipeline(env, tmp_path, parts=("ingest", "projector")) as pipeline:
        projector = pipeline.processes["projector"]
        answers = post_all(pipeline, range(1, 101))
        eventually(lambda: _checkpoint_is(private_database, 99), timeout=30)

        cluster.stop()
        seen_before_outage = len(projector.output())
        answers += post_all(pipeline, range(101, 201))
        _ok(readiness(pipeline))
        # the projector holds a batch it cannot commit, and keeps trying
        eventually(lambda: _retrying(projector.output()[seen_before_outage:]), timeout=30)
        # meanwhile its stream connection drops too: it must resume from its checkpoint
        assert broker.close_connections("hookline projector") == 1
        answers += post_all(pipeline, range(201, 301))

        cluster.start()
        eventually(lambda: _checkpoint_is(private_database, 299), timeout=60)
        assert projector.alive, "the projector must wait out the outage, not exit"
        output = projector.output()[seen_before_outage:]

    assert [a.status for a in answers] == [202] * 300
    assert sorted(log_ids(Settings(amqp_url=broker.url, stream=private_stream))) == sorted(
        a.id for a in answers)
    done = projected(private_database)
    assert (done.events, done.distinct_ids, done.outcomes) == (300, 300, {"applied": 300})
    assert (done.transactions, done.total) == expected(transaction(n) for n in range(1, 301))
    resumed = re.search(r"reading \S+ from offset (\d+)", output)
    assert resumed, "the projector did not re-read the stream after its connection dropped"
    assert int(resumed.group(1)) > 100, "it re-read records it had already committed"


def _checkpoint_is(database_url: str, offset: int) -> None:
    assert projected(database_url).checkpoint == offset


def _retrying(output: str) -> None:
    assert "Retrying" in output, "the projector has not met the outage yet"
