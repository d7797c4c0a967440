"""The operator API gives nothing away: every route (as its OpenAPI document lists them) refuses
a missing or wrong token, and SQL in a filter or an id is a 400 or finds nothing."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import psycopg
import requests

from tests.abuse.conftest import TOKEN, Hostile

EXAMPLES = {"transaction_id": "tx-0000001", "reference": "BK-1", "offset": "1", "email_id": "1"}
WRONG = [None, "Bearer", "Bearer ", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
         f"Bearer {TOKEN.lower()}", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:8]}",
         "Bearer ' OR '1'='1", f"Bearer {TOKEN} {TOKEN}", f"Token {TOKEN}"]
SQL = ["' OR '1'='1", "1' OR 1=1 --", "'; DROP TABLE transactions; --",
       "1 UNION SELECT last_offset FROM consumer_offsets", "%' OR '%'='", "%", "_",
       "'; SELECT pg_sleep(3); --", "1)) OR ((1=1", "$$; DELETE FROM events; $$",
       "tx-0000001' --", "\\", "BK-1' OR 'a'='a"]
SEEDED = ("tx-000", "BK-", "@example.com", "acct-")  # found in every row the seed wrote
TABLES = ("transactions", "bookings", "events", "email_outbox", "consumer_offsets")


def routes(hostile: Hostile) -> list[tuple[str, str, list[str]]]:
    """(method, path with each parameter an existing row's, query parameter names)."""
    spec = requests.get(f"{hostile.pipeline.api_url}/v1/openapi.json", timeout=10,
                        headers={"Authorization": f"Bearer {TOKEN}"}).json()
    found = []
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            path = template
            for name, value in EXAMPLES.items():
                path = path.replace(f"{{{name}}}", value)
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            found.append((method.upper(), path, names))
    return found


def call(hostile: Hostile, method: str, path: str, authorization: str | None,
         params: dict[str, str] | None = None) -> requests.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return requests.request(method, f"{hostile.pipeline.api_url}{path}", headers=headers,
                            params=params, timeout=30)


def counts(hostile: Hostile) -> dict[str, int]:
    url = hostile.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]  # noqa: S608
                for t in TABLES}


def no_data(answer: requests.Response, sent: str = "") -> None:
    """No seeded row shows, apart from an echo of what was sent (a 404 names the id)."""
    text = answer.text.replace(sent, "").replace(sent.replace("\\", "\\\\"), "")
    assert not any(marker in text for marker in SEEDED), answer.text[:300]


def test_every_route_refuses_a_missing_or_wrong_token_and_shows_no_data(
        hostile: Hostile) -> None:
    listed = routes(hostile)
    assert {path for _, path, _ in listed} >= {"/v1/transactions", "/v1/bookings",
                                                "/v1/events", "/v1/outbox", "/v1/status"}
    before = counts(hostile)
    for method, path, _ in [*listed, ("GET", "/v1/openapi.json", [])]:
        assert call(hostile, method, path, f"Bearer {TOKEN}").status_code != 401, path
        for authorization in WRONG:
            answer = call(hostile, method, path, authorization)
            assert answer.status_code == 401, (method, path, authorization, answer.text[:200])
            assert set(answer.json()) == {"error", "detail"}
            assert answer.headers["WWW-Authenticate"] == "Bearer"
            no_data(answer)
        in_query = call(hostile, method, path, None, {"token": TOKEN, "access_token": TOKEN})
        assert in_query.status_code == 401, "a token is taken from the query string"
    assert counts(hostile) == before, "a refused request changed something"


def items_or_refusal(answer: requests.Response, sent: str) -> list[Any]:
    """A 400, or a 200 whose list is empty: never rows picked by the SQL."""
    assert answer.status_code in (200, 400), (answer.status_code, answer.text[:300])
    if answer.status_code == 400:
        no_data(answer, sent)
        return []
    items: list[Any] = answer.json()["items"]
    return items


def test_sql_in_every_filter_and_id_is_refused_or_matches_nothing(hostile: Hostile) -> None:
    before = counts(hostile)
    token = f"Bearer {TOKEN}"
    for method, path, names in routes(hostile):
        for name in names if method == "GET" else []:
            for value in SQL:
                started = time.monotonic()
                answer = call(hostile, method, path, token, {name: value})
                assert time.monotonic() - started < 2.5, f"{path}?{name}={value} was slow"
                assert items_or_refusal(answer, value) == [], f"{path}?{name}={value} found rows"
    for value in SQL:
        for path in (f"/v1/transactions/{quote(value, safe='')}",
                     f"/v1/bookings/{quote(value, safe='')}", f"/v1/events/{quote(value)}"):
            answer = call(hostile, "GET", path, token)
            assert answer.status_code == 404, (path, answer.text[:200])
            no_data(answer, value)
        answer = call(hostile, "POST", f"/v1/outbox/{quote(value, safe='')}/retry", token)
        assert answer.status_code == 404
    assert counts(hostile) == before, "SQL in an argument changed something"
