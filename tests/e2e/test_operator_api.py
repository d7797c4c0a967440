"""The operator API as a real `hookline api` process over real PostgreSQL: filters, keyset
pagination under writes, argument errors, tokens, the outbox retry, and its OpenAPI document."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg import sql
from psycopg.rows import dict_row

from tests.conftest import (
    AMQP_URL,
    _db_url,
    copy_database,
    drop_database,
)
from tests.operator_seed import seed
from tests.processes import TOKEN, Pipeline, running_pipeline

Row = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
METRICS_TOKEN = "test-metrics-token-0001"


@pytest.fixture(scope="module")
def seeded(template_database: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Pipeline, psycopg.Connection[Row]]]:
    """One API process for the module over a database of a few hundred rows per table, the
    events in two partitions."""
    name = copy_database(template_database)
    url = _db_url(name)
    env = {"HOOKLINE_DATABASE_URL": url, "HOOKLINE_AMQP_URL": AMQP_URL,
           "HOOKLINE_STREAM": f"hookline.test.{uuid.uuid4().hex[:12]}", "HOOKLINE_PARTITIONS": "2",
           "HOOKLINE_METRICS_TOKENS": METRICS_TOKEN}
    try:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True,
                             row_factory=dict_row) as db:
            seed(db, transactions=600, bookings=400, events=700, emails=300, moments=30,
                 references=40, partitions=2)
            with running_pipeline(env, tmp_path_factory.mktemp("api"), parts=("api",)) as api:
                yield api, db
    finally:
        drop_database(name)


def walk(api: Pipeline, path: str, params: dict[str, Any], limit: int,
         on_page: Callable[[], None] | None = None) -> list[Row]:
    """Every item of a list, page after page through next_cursor."""
    items: list[Row] = []
    cursor = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = api.http.get(f"{api.api_url}{path}", params=query, timeout=10,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if on_page is not None:
            on_page()
        if cursor is None:
            return items


def newest_first(rows: list[Row], first: str, second: str) -> list[Any]:
    """Keys in the API's order: first column descending with nulls first, then the second."""
    nulls = sorted((r[second] for r in rows if r[first] is None), reverse=True)
    dated = sorted(((r[first], r[second]) for r in rows if r[first] is not None), reverse=True)
    return nulls + [key for _, key in dated]


A, B = T0 + timedelta(minutes=7), T0 + timedelta(minutes=21)
TRANSACTION_FILTERS: list[tuple[dict[str, Any], Callable[[Row], bool]]] = [
    *(({"status": s}, lambda r, s=s: r["status"] == s) for s in
      ("pending", "succeeded", "failed", "refunded", "partially_refunded", "timed_out")),
    *(({"source": s}, lambda r, s=s: r["source"] == s) for s in
      ("stripe", "chapa", "transactions", "bookings")),
    *(({"booking_reference": b}, lambda r, b=b: r["booking_reference"] == b)
      for b in ("BK-1", "BK-39", "BK-none")),
    ({"created_after": A.isoformat()}, lambda r: r["created_at"] >= A),
    ({"created_before": B.isoformat()}, lambda r: r["created_at"] < B),
    ({"created_after": A.isoformat(), "created_before": B.isoformat(), "status": "succeeded"},
     lambda r: A <= r["created_at"] < B and r["status"] == "succeeded"),
    ({"flag": "disputed"}, lambda r: r["disputed"]),
    ({"flag": "refunded"}, lambda r: r["refunded_amount"] > 0),
    ({}, lambda r: True),
]
BOOKING_FILTERS: list[tuple[dict[str, Any], Callable[[Row], bool]]] = [
    *(({"status": s}, lambda r, s=s: r["status"] == s) for s in
      ("pending", "confirmed", "cancelled", "expired", "refunded")),
    *(({"customer_email": e}, lambda r, e=e: r["customer_email"] == e)
      for e in ("guest7@example.com", "nobody@example.com")),
    ({"flag": "late_payment"}, lambda r: r["late_payment"]),
    ({"flag": "amount_mismatch"}, lambda r: r["amount_mismatch"]),
    ({"created_after": A.isoformat()},
     lambda r: r["created_at"] is not None and r["created_at"] >= A),
    ({"created_before": B.isoformat(), "flag": "late_payment"},
     lambda r: r["created_at"] is not None and r["created_at"] < B and r["late_payment"]),
    ({}, lambda r: True),
]
E1, E2 = T0 + timedelta(seconds=100), T0 + timedelta(seconds=400)
EVENT_FILTERS: list[tuple[dict[str, Any], Callable[[Row], bool]]] = [
    *(({"source": s}, lambda r, s=s: r["source"] == s) for s in
      ("stripe", "chapa", "transactions", "bookings", "scheduler", "unknown")),
    *(({"type": t}, lambda r, t=t: r["type"] == t) for t in ("charge.refunded", "nope")),
    ({"subject": "BK-3"}, lambda r: r["subject"] == "BK-3"),
    *(({"outcome": o}, lambda r, o=o: r["outcome"] == o) for o in
      ("applied", "duplicate", "ignored", "rejected")),
    ({"received_after": E1.isoformat(), "received_before": E2.isoformat()},
     lambda r: E1 <= r["received_at"] < E2),
    *(({"partition": k}, lambda r, k=k: r["partition"] == k) for k in (0, 1)),
    ({"partition": 1, "source": "chapa"}, lambda r: r["partition"] == 1 and r["source"] == "chapa"),
    ({}, lambda r: True),
]
OUTBOX_FILTERS: list[tuple[dict[str, Any], Callable[[Row], bool]]] = [
    *(({"status": s}, lambda r, s=s: r["status"] == s) for s in
      ("pending", "sent", "failed", "dead")),
    *(({"template": t}, lambda r, t=t: r["template"] == t) for t in
      ("booking_confirmation", "payment_confirmation", "payment_failure")),
    ({"status": "dead", "template": "payment_failure"},
     lambda r: r["status"] == "dead" and r["template"] == "payment_failure"),
    ({}, lambda r: True),
]


@pytest.mark.parametrize(("path", "table", "key", "cases"), [
    ("/v1/transactions", "transactions", ("created_at", "transaction_id"), TRANSACTION_FILTERS),
    ("/v1/bookings", "bookings", ("created_at", "reference"), BOOKING_FILTERS),
    ("/v1/events", "events", ("offset", "partition"), EVENT_FILTERS),
    ("/v1/outbox", "email_outbox", ("id",), OUTBOX_FILTERS),
], ids=["transactions", "bookings", "events", "outbox"])
def test_every_filter_returns_exactly_the_matching_rows_newest_first(
        seeded: tuple[Pipeline, psycopg.Connection[Row]], path: str, table: str,
        key: tuple[str, ...], cases: list[tuple[dict[str, Any], Callable[[Row], bool]]]
) -> None:
    api, db = seeded
    rows = db.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall()
    if table in ("transactions", "bookings"):  # a time that may be null, then a unique name
        names = key[1:]
        order = [(k,) for k in newest_first(rows, key[0], key[1])]
    else:  # offsets (a partition breaking ties) and ids: newest first
        names = key
        order = sorted((tuple(r[c] for c in key) for r in rows), reverse=True)
    for params, matches in cases:
        wanted = {tuple(r[c] for c in names) for r in rows if matches(r)}
        expected = [k for k in order if k in wanted]
        got = [tuple(item[c] for c in names) for item in walk(api, path, params, limit=137)]
        assert got == expected, f"{path} {params}: {len(got)} rows, {len(expected)} expected"
        if params == {}:
            assert len(got) == len(rows)


def test_every_bad_argument_is_a_400_naming_its_field(
        seeded: tuple[Pipeline, psycopg.Connection[Row]]) -> None:
    api, _ = seeded
    other_list = walk_first_cursor(api, "/v1/events")
    bad = [
        ("/v1/transactions", "status", "paid"), ("/v1/transactions", "source", "paypal"),
        ("/v1/transactions", "created_after", "yesterday"),
        ("/v1/transactions", "created_before", "2026-13-01"), ("/v1/transactions", "flag", "x"),
        ("/v1/transactions", "booking_reference", ""), ("/v1/transactions", "limit", "0"),
        ("/v1/transactions", "limit", "501"), ("/v1/transactions", "limit", "ten"),
        ("/v1/transactions", "cursor", "!!"), ("/v1/transactions", "cursor", other_list),
        ("/v1/transactions", "cursor", "eyJ4IjoxfQ"), ("/v1/transactions", "statuss", "failed"),
        ("/v1/bookings", "status", "paid"), ("/v1/bookings", "flag", "disputed"),
        ("/v1/bookings", "customer_email", "a\x00b"), ("/v1/bookings", "created_after", "1"),
        ("/v1/bookings", "created_before", "2026-01-01T25:00"), ("/v1/bookings", "cursor", "e30"),
        ("/v1/events", "source", "paypal"), ("/v1/events", "outcome", "lost"),
        ("/v1/events", "received_after", "now"), ("/v1/events", "received_before", "-1"),
        ("/v1/events", "type", "x" * 256), ("/v1/events", "subject", ""),
        ("/v1/events", "limit", "-5"), ("/v1/events", "cursor", "WyJldmVudHMiLCJ4Il0"),
        ("/v1/events", "cursor", cursor(["events", 5])),  # one without the partition
        ("/v1/events", "cursor", cursor(["events", 5, 40000])),  # no such smallint
        ("/v1/events", "cursor", cursor(["events", 5, -1])),
        ("/v1/events", "partition", "2"), ("/v1/events", "partition", "-1"),
        ("/v1/events", "partition", "one"), ("/v1/events/5", "partition", "2"),
        ("/v1/events/5", "partition", "1.5"), ("/v1/events/5", "offset", "1"),
        ("/v1/outbox", "status", "sending"), ("/v1/outbox", "template", "welcome"),
        ("/v1/outbox", "cursor", "WyJvdXRib3giXQ"), ("/v1/outbox", "limit", "1e3"),
    ]
    for path, field, value in bad:
        answer = api.get(f"{path}?{requests.compat.urlencode({field: value})}")
        assert answer.status_code == 400, (path, field, value, answer.text)
        body = answer.json()
        assert body["error"] == "bad_request"
        assert list(body["fields"]["query"]) == [field], (path, field, body)


def cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).rstrip(b"=").decode()


def walk_first_cursor(api: Pipeline, path: str) -> str:
    cursor: str = api.get(f"{path}?limit=1").json()["next_cursor"]
    assert cursor
    return cursor


def test_no_route_answers_without_a_valid_token_and_unknown_ids_are_json_404s(
        seeded: tuple[Pipeline, psycopg.Connection[Row]]) -> None:
    api, _ = seeded
    spec = api.get("/v1/openapi.json").json()
    routes = [("get", "/v1/openapi.json")] + [
        (method, path.replace("{transaction_id}", "tx-0000001").replace("{reference}", "BK-1")
         .replace("{offset}", "1").replace("{email_id}", "1"))
        for path, item in spec["paths"].items() for method in item if method != "parameters"]
    assert len(routes) == 12
    for method, path in routes:
        for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                       {"Authorization": f"Basic {TOKEN}"}):
            answer = api.http.request(method, f"{api.api_url}{path}", headers=header, timeout=10)
            assert answer.status_code == 401, (method, path, header)
            assert answer.json()["error"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz"):
        assert api.http.get(f"{api.api_url}{path}", timeout=10).status_code == 200
    for path in ("/v1/transactions/tx-none", "/v1/bookings/BK-none", "/v1/events/999999",
                 "/v1/events/999999?partition=1",
                 "/v1/events/99999999999999999999", "/v1/events/-1", "/v1/transactions/a%00b"):
        answer = api.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "not_found"
    assert api.http.post(f"{api.api_url}/v1/outbox/999999/retry", timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_metrics_on_the_api_port_need_an_operator_or_a_metrics_token(
        seeded: tuple[Pipeline, psycopg.Connection[Row]]) -> None:
    api, _ = seeded
    for token in (None, "wrong-token-of-some-length", METRICS_TOKEN[:-1]):
        answer = api.get("/metrics", token=token)
        assert answer.status_code == 401, token
        assert "hookline_" not in answer.text
    for token in (TOKEN, METRICS_TOKEN):
        answer = api.get("/metrics", token=token)
        assert answer.status_code == 200, token
        assert answer.headers["Content-Type"].startswith("text/plain")
    assert api.get("/v1/status", token=METRICS_TOKEN).status_code == 401  # metrics only


def test_an_event_is_served_with_its_payload_as_stored_numbers_exact(
        seeded: tuple[Pipeline, psycopg.Connection[Row]]) -> None:
    api, db = seeded
    for query, partition in (("", 0), ("?partition=0", 0), ("?partition=1", 1)):
        answer = api.get(f"/v1/events/5{query}")
        assert answer.status_code == 200
        assert '"amount": 10.990' in answer.text  # not 10.99: the stored number, exactly
        found = answer.json()
        row = db.execute('SELECT * FROM events WHERE "offset" = 5 AND "partition" = %s',
                         (partition,)).fetchone()
        assert row is not None
        assert found["payload"] == {"n": 10 + partition, "amount": 10.99}  # seeded 2 per offset
        assert (found["partition"], found["id"], found["subject"], found["outcome"]) == (
            partition, row["id"], row["subject"], row["outcome"])


def test_a_dead_or_failed_email_can_be_retried_and_a_sent_one_cannot(
        seeded: tuple[Pipeline, psycopg.Connection[Row]]) -> None:
    api, db = seeded
    dead, failed, sent = (db.execute(
        "SELECT id FROM email_outbox WHERE status = %s ORDER BY id LIMIT 1", (s,)).fetchone()
        for s in ("dead", "failed", "sent"))
    assert dead is not None
    assert failed is not None
    assert sent is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for row in (dead, failed):
        answer = api.http.post(f"{api.api_url}/v1/outbox/{row['id']}/retry", headers=headers,
                               timeout=10)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["attempts"]) == ("pending", 0)
        stored = db.execute("SELECT status, attempts, next_attempt_at <= now() AS due "
                            "FROM email_outbox WHERE id = %s", (row["id"],)).fetchone()
        assert stored == {"status": "pending", "attempts": 0, "due": True}
    refused = api.http.post(f"{api.api_url}/v1/outbox/{sent['id']}/retry", headers=headers,
                            timeout=10)
    assert refused.status_code == 409
    assert "sent" in refused.json()["detail"]


def test_the_cli_retries_one_email_or_every_dead_one(
        seeded: tuple[Pipeline, psycopg.Connection[Row]]) -> None:
    api, db = seeded
    failed = db.execute("SELECT id FROM email_outbox WHERE status = 'failed' "
                        "ORDER BY id DESC LIMIT 1").fetchone()
    assert failed is not None
    one = hookline(api, "outbox", "retry", str(failed["id"]))
    assert one.returncode == 0, one.stderr
    assert f"email {failed['id']}" in one.stdout
    again = hookline(api, "outbox", "retry", str(failed["id"]))
    assert again.returncode == 1
    assert "only a dead or failed email can be retried" in again.stderr
    dead = {r["id"] for r in db.execute("SELECT id FROM email_outbox WHERE status = 'dead'")}
    assert dead
    every = hookline(api, "outbox", "retry", "--all-dead")
    assert every.returncode == 0, every.stderr
    assert f"{len(dead)} dead emails are pending again" in every.stdout
    assert db.execute("SELECT count(*) AS n FROM email_outbox WHERE id = ANY(%s) AND "
                      "status = 'pending' AND attempts = 0", (list(dead),)).fetchone() == {
        "n": len(dead)}


def hookline(api: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookline", *args], env=api.env,
                          capture_output=True, text=True, timeout=60)


def test_the_openapi_document_validates_and_schemathesis_finds_no_error_or_schema_breach(
        seeded: tuple[Pipeline, psycopg.Connection[Row]], tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    api, _ = seeded
    spec = api.get("/v1/openapi.json").json()
    validate(spec)
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run",
         str(tmp_path / "openapi.json"), "--url", api.api_url,
         "-H", f"Authorization: Bearer {TOKEN}", "--max-examples", "25", "--seed", "1",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance",
         "--generation-database", "none", "--no-color"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


# --- pagination while rows keep arriving ------------------------------------------------------


def test_pagination_walks_1234_rows_once_each_while_new_rows_keep_arriving(
        database_url: str, db: psycopg.Connection, env: dict[str, str], tmp_path: Path) -> None:
    seed(db, transactions=1234, moments=25)  # about fifty rows share each created_at
    original = {r[0] for r in db.execute("SELECT transaction_id FROM transactions")}
    stop = threading.Event()
    written: list[str] = []

    def keep_writing() -> None:
        """New rows with the same times as the old ones: they land before and after the cursor."""
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as writer:
            rng = random.Random(7)
            while not stop.is_set():
                number = rng.randrange(1, 10_000_000)
                if f"{number}" in written:
                    continue
                written.append(f"{number}")
                seed(writer, transactions=1, moments=25, first=number, prefix="tx-x")
    with running_pipeline(env, tmp_path, parts=("api",)) as api:
        writer = threading.Thread(target=keep_writing, daemon=True)
        writer.start()
        pages = 0

        def page_read() -> None:
            nonlocal pages
            pages += 1
        try:
            walked = [i["transaction_id"] for i in walk(api, "/v1/transactions", {}, 50,
                                                        page_read)]
        finally:
            stop.set()
            writer.join(10)
    assert len(written) > pages  # rows kept arriving during the walk
    assert len(walked) == len(set(walked)), "a row was shown twice"
    assert original <= set(walked), f"{len(original - set(walked))} rows were skipped"
    assert pages >= 1234 // 50


def test_pagination_through_bookings_not_yet_created_misses_none(
        db: psycopg.Connection, env: dict[str, str], tmp_path: Path) -> None:
    seed(db, bookings=400, moments=9)  # every 50th booking has no created_at: it sorts first
    rows = db.execute("SELECT reference, created_at FROM bookings").fetchall()
    with running_pipeline(env, tmp_path, parts=("api",)) as api:
        for limit in (3, 7, 50):
            walked = [i["reference"] for i in walk(api, "/v1/bookings", {}, limit)]
            assert walked == newest_first([{"created_at": c, "reference": r} for r, c in rows],
                                          "created_at", "reference")
