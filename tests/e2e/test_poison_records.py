"""A record can never stop the projector: records ingress would refuse today, written straight
into the real log, are projected `rejected` by a real `hookline project` and the log moves on;
an operator rejects a record ahead of the projector with `hookline events reject`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hookline.config import Settings
from hookline.log.envelope import encode, utcnow
from hookline.log.publisher import Publisher
from tests.faults.support import transaction
from tests.processes import Pipeline, eventually, running_pipeline, scalar

MARKER = "payload-marker-never-logged"  # in every poison payload: must reach no log line


def publish(settings: Settings, payloads: list[bytes]) -> None:
    """Append one transaction record per raw payload, as ingress would, bypassing its checks."""
    publisher = Publisher(settings, name="poison-writer")
    publisher.start()
    assert publisher.wait_ready(30)
    try:
        for n, payload in enumerate(payloads):
            received_at = utcnow()
            key = f"transactions:poison-{n}-{utcnow().timestamp()}"
            publisher.publish(settings.stream, key, encode(
                key, "transactions", "transaction.succeeded", f"tx-{n}", received_at, payload),
                received_at)
    finally:
        publisher.stop()


def ok(n: int) -> bytes:
    return json.dumps(transaction(n)).encode()


def poison(n: int, number: str) -> bytes:
    """A valid transaction but for a number numeric cannot hold, in a field nobody reads."""
    body = json.dumps({**transaction(n), "metadata": {"note": MARKER, "x": "NUMBER"}})
    return body.replace('"NUMBER"', number).encode()


@pytest.fixture
def projector(env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    with running_pipeline(env, tmp_path, parts=()) as pipeline:
        yield pipeline


def events(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute('SELECT "offset", outcome, error, payload IS NULL FROM events '
                      'ORDER BY "offset"').fetchall()


def caught_up(db: psycopg.Connection, last: int) -> None:
    assert scalar(db, "SELECT last_offset FROM consumer_offsets") == last


@pytest.mark.parametrize("number", ["0e-99999", "1e-16384", "1.0e-16383"])
def test_a_number_jsonb_cannot_store_is_rejected_and_the_log_moves_on(
        settings: Settings, projector: Pipeline, db: psycopg.Connection, number: str) -> None:
    publish(settings, [ok(1), poison(2, number), ok(3)])
    process = projector.start_projector()

    eventually(lambda: caught_up(db, 2), timeout=60)
    publish(settings, [ok(4)])  # later deliveries are projected too
    eventually(lambda: caught_up(db, 3), timeout=60)

    found = events(db)
    assert [(o, outcome) for o, outcome, _, _ in found] == [
        (0, "applied"), (1, "rejected"), (2, "applied"), (3, "applied")]
    _, _, error, no_payload = found[1]
    assert no_payload
    assert "value overflows numeric format" in error
    assert "payload could not be stored" in error
    assert MARKER not in error
    assert scalar(db, "SELECT count(*) FROM transactions") == 3
    assert process.alive
    assert MARKER not in process.output()
    assert "22003" in process.output()  # the log names the SQLSTATE, offset and partition


def test_a_nesting_deeper_than_the_exact_parse_takes_is_rejected(
        settings: Settings, projector: Pipeline, db: psycopg.Connection) -> None:
    # orjson reads 1024 levels, the projector's exact re-read fewer: ingress now refuses this
    deep = json.dumps({**transaction(2), "x": "DEEP"}).replace(
        '"DEEP"', "[" * 1000 + "]" * 1000).encode()
    publish(settings, [ok(1), deep, ok(3)])
    process = projector.start_projector()

    eventually(lambda: caught_up(db, 2), timeout=60)

    assert [(o, outcome) for o, outcome, _, _ in events(db)] == [
        (0, "applied"), (1, "rejected"), (2, "applied")]
    assert process.alive


def hookline(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookline", *args], env=pipeline.env,
                          capture_output=True, text=True, timeout=120)


def test_an_operator_rejects_a_record_before_the_projector_reaches_it(
        settings: Settings, projector: Pipeline, db: psycopg.Connection) -> None:
    publish(settings, [ok(1), ok(2), ok(3)])

    done = hookline(projector, "events", "reject", "1", "--reason", "crashes the mapper")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "offset 1" in done.stdout

    projector.start_projector()
    eventually(lambda: caught_up(db, 2), timeout=60)
    found = events(db)
    assert [(o, outcome) for o, outcome, _, _ in found] == [
        (0, "applied"), (1, "rejected"), (2, "applied")]
    assert found[1][2] == "rejected by an operator: crashes the mapper"
    assert not found[1][3]  # the record's payload is kept in the trail
    assert scalar(db, "SELECT count(*) FROM transactions WHERE transaction_id = 'tx-2'") == 0

    again = hookline(projector, "events", "reject", "0", "--reason", "too late")
    assert again.returncode != 0
    assert "already projected" in again.stderr
    assert "applied" in again.stderr
    beyond = hookline(projector, "events", "reject", "3", "--reason", "not there")
    assert beyond.returncode != 0
    assert "beyond the end of the log" in beyond.stderr
    wrong = hookline(projector, "events", "reject", "1", "--partition", "1", "--reason", "x")
    assert wrong.returncode != 0
    assert "partition" in wrong.stderr
