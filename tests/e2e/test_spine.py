"""The spine end to end: HTTP in, stream, projector, PostgreSQL, operator API out."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg

from tests.processes import Pipeline, eventually, scalar


def transaction(n: int | str, **extra: object) -> dict[str, object]:
    return {"transaction_id": f"tx-{n}", "source_account": f"acct-{n}",
            "destination_account": "acct-hotel", "amount": f"{n}.25", "currency": "EUR",
            **extra}


def test_distinct_transactions_posted_concurrently_are_all_readable(pipeline: Pipeline) -> None:
    bodies = [transaction(n, booking_reference=f"BK-{n}") for n in range(1, 201)]
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda b: pipeline.post("transactions", b), bodies))

    assert [r.status_code for r in responses] == [202] * 200
    assert {r.json()["id"] for r in responses} == {f"transactions:tx-{n}" for n in range(1, 201)}

    def all_readable() -> None:
        for body in bodies:
            got = pipeline.get(f"/v1/transactions/{body['transaction_id']}")
            assert got.status_code == 200, got.text
            found = got.json()
            assert found["amount"] == body["amount"]
            assert (found["source_account"], found["destination_account"]) == (
                body["source_account"], "acct-hotel")
            assert (found["currency"], found["status"], found["booking_reference"]) == (
                "EUR", "succeeded", body["booking_reference"])
            assert found["source"] == "transactions"
            assert found["created_at"]
            assert found["processed_at"]

    eventually(all_readable, timeout=30)


def test_same_transaction_posted_twenty_times_is_projected_once(
        pipeline: Pipeline, db: psycopg.Connection) -> None:
    body = transaction(7)
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: pipeline.post("transactions", body), range(20)))
    assert [r.status_code for r in responses] == [202] * 20

    def projected() -> None:
        assert scalar(db, "SELECT count(*) FROM events") == 20
    eventually(projected)

    assert scalar(db, "SELECT count(*) FROM transactions") == 1
    assert scalar(db, "SELECT amount FROM transactions") == Decimal("7.25")
    outcomes: dict[str, int] = dict(
        db.execute("SELECT outcome, count(*) FROM events GROUP BY outcome").fetchall())
    assert outcomes == {"applied": 1, "duplicate": 19}


def test_unknown_transaction_is_a_json_404_and_the_api_needs_a_token(pipeline: Pipeline) -> None:
    missing = pipeline.get("/v1/transactions/tx-none")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"

    for token in (None, "wrong-token"):
        refused = pipeline.get("/v1/transactions/tx-none", token=token)
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"


def test_health_answers_healthy_with_the_current_time(pipeline: Pipeline) -> None:
    answer = pipeline.http.get(f"{pipeline.ingest_url}/")
    assert answer.status_code == 200
    assert answer.json()["status"] == "HEALTHY"
    assert answer.json()["current_time"].endswith("Z")
