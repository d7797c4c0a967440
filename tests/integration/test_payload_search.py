"""GET /v1/events?q=: records found by the words their payload holds, from migration 0009's
full-text index, with the list's other filters and its cursor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine

from hookline.config import load_settings
from hookline.readside import queries
from hookline.web.api import create_api
from tests.processes import TOKEN

FILLER = 3000  # records whose payloads hold none of the searched words
# (offset, source, payload) of the records the searches find
FOUND = [
    (5001, "bookings", '{"type": "booking.created", "booking": {"reference": "BK-SEARCH-1", '
     '"customer": {"email": "Ada.Lovelace@example.org"}, "total_amount": "129.90"}}'),
    (5002, "stripe", '{"id": "evt_1", "data": {"object": {"id": "pi_1", "amount": 12990, '
     '"receipt_email": "ada.lovelace@example.org", '
     '"metadata": {"booking_reference": "BK-SEARCH-1"}}}}'),
    (5003, "chapa", '{"event": "charge.success", "tx_ref": "BK-SEARCH-1", "amount": "400.00", '
     '"email": "grace@example.net"}'),
    (5004, "chapa", '{"note": "100% off_sale \\\\ o\'neil"}'),
]
ADA, GRACE = {5001, 5002}, {5003}


@pytest.fixture(scope="module")
def searched(template_database: str) -> Iterator[str]:
    """One database for the module, its URL: filler records, then FOUND."""
    from tests.conftest import _db_url, copied_database

    with copied_database(template_database) as name:
        url = _db_url(name)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as db:
            seed(db)
        yield url


@pytest.fixture(scope="module")
def client(searched: str) -> Iterator[FlaskClient]:
    """The operator API over that database."""
    engine = create_engine(searched)
    settings = load_settings({"HOOKLINE_DATABASE_URL": searched,
                              "HOOKLINE_OPERATOR_TOKENS": TOKEN})
    yield create_api(settings, engine).test_client()
    engine.dispose()


def seed(db: psycopg.Connection[Any]) -> None:
    db.execute("""
        INSERT INTO events ("offset", "partition", id, source, type, subject, received_at,
                            projected_at, outcome, error, payload)
        SELECT i, 0, 'stripe:evt_' || i, 'stripe', 'payment_intent.succeeded', 'BK-' || i,
               now(), now(), 'applied', NULL,
               jsonb_build_object('id', 'evt_' || i, 'amount', 1000 + i,
                                  'receipt_email', 'guest' || i || '@example.com')
        FROM generate_series(1, %s) AS i""", (FILLER,))
    for offset, source, payload in FOUND:
        db.execute("""
            INSERT INTO events ("offset", "partition", id, source, type, subject, received_at,
                                projected_at, outcome, error, payload)
            VALUES (%s, 0, %s, %s, 'some.type', 'BK-SEARCH-1', now(), now(), 'applied', NULL,
                    %s)""", (offset, f"{source}:{offset}", source, payload))
    # a record whose payload could not be stored: never found, never an error
    db.execute("""
        INSERT INTO events ("offset", "partition", id, source, type, subject, received_at,
                            projected_at, outcome, error, payload)
        VALUES (6000, 0, 'chapa:6000', 'chapa', 'x', 'BK-SEARCH-1', now(), now(), 'rejected',
                'the payload could not be stored', NULL)""")
    db.execute("ANALYZE events")


def search(client: FlaskClient, **query: Any) -> Any:
    answer = client.get("/v1/events", query_string=query,
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def offsets(client: FlaskClient, **query: Any) -> set[int]:
    return {item["offset"] for item in search(client, **query)["items"]}


@pytest.mark.parametrize(("q", "expected"), [
    ("ada.lovelace@example.org", ADA),
    ("ADA.LOVELACE@EXAMPLE.ORG", ADA),  # any case
    ("grace@example.net", GRACE),
    ("BK-SEARCH-1", {5001, 5002, 5003}),  # a reference, in whichever field each source has it
    ("pi_1", {5002}),
    ("129.90", {5001}),  # an amount as a string
    ("12990", {5002}),  # an amount as a number (Stripe's cents)
    ("400.00", GRACE),
    ("guest17@example.com", {17}),  # one among the filler
    ("nobody@example.com", set()),
])
def test_q_finds_the_records_whose_payload_holds_the_text(
        client: FlaskClient, q: str, expected: set[int]) -> None:
    assert offsets(client, q=q) == expected


def test_q_combines_with_the_other_filters(client: FlaskClient) -> None:
    assert offsets(client, q="BK-SEARCH-1", source="chapa") == GRACE
    assert offsets(client, q="ada.lovelace@example.org", source="chapa") == set()
    assert offsets(client, q="ada.lovelace@example.org", outcome="applied") == ADA


def test_q_pages_through_its_matches_with_the_cursor(client: FlaskClient) -> None:
    seen, cursor = [], None
    for _ in range(5):
        page = search(client, q="BK-SEARCH-1", limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [item["offset"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5003, 5002, 5001]  # newest first, each once


@pytest.mark.parametrize("q", ["ab", "", "a\x00b"])
def test_a_q_too_short_or_unstorable_is_refused_naming_the_field(
        client: FlaskClient, q: str) -> None:
    answer = client.get("/v1/events", query_string={"q": q},
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 400
    assert "q" in answer.get_json()["fields"]["query"]


@pytest.mark.parametrize(("q", "expected"), [
    ("ada.lovelace@example.org | grace@example.net", set()),  # not "or": a phrase of both
    ("!grace@example.net", GRACE),  # not "not"
    ("gra:*", set()),  # not a prefix
    ("grac%", set()),  # % is no wildcard
    ("gr_ce@example.net", set()),  # nor is _
    ("o'neil \\", {5004}),  # quotes and backslashes are text
    ("100% off_sale", {5004}),
    ("'); DROP TABLE events; --", set()),
])
def test_the_query_syntax_in_q_is_taken_as_text(client: FlaskClient, q: str,
                                                expected: set[int]) -> None:
    assert offsets(client, q=q) == expected


def test_a_search_is_read_through_the_payload_index(searched: str) -> None:
    """The index is valid, and the planner reads it for a search (sequential scans off: a few
    thousand rows are too few to tell otherwise)."""
    engine = create_engine(searched)
    with engine.connect() as conn:
        valid = conn.exec_driver_sql(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indexrelid = 'events_payload_search'::regclass").one()
        assert valid[0], valid
        assert "gin (jsonb_to_tsvector('simple'::regconfig, payload" in valid[1]
        conn.exec_driver_sql("SET enable_seqscan = off")
        statement = queries.EVENTS.statements({"q": "grace@example.net"}, 50)[0]
        compiled = statement.compile(dialect=conn.dialect)
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}",
                                                           compiled.params))
    engine.dispose()
    assert "events_payload_search" in plan, plan


def test_a_rare_word_is_sorted_from_the_index_and_a_common_one_walks_newest_first(
        searched: str) -> None:
    """The planner guesses 0.5% of the table for a word its statistics do not list: such a
    search sorts the index's matches instead of walking every record newest first."""
    engine = create_engine(searched)
    with engine.connect() as conn:
        rare = queries.page_statements(conn, queries.EVENTS, {"q": "grace@example.net"}, 50)
        common = queries.page_statements(conn, queries.EVENTS, {"q": "evt"}, 50)
        assert "+" in str(rare[0].compile()).split("ORDER BY")[1]
        assert "+" not in str(common[0].compile()).split("ORDER BY")[1]
        assert [r["offset"] for r in queries.page(conn, queries.EVENTS, {"q": "evt"}, 2).items] \
            == [5002, FILLER]  # newest first
    engine.dispose()
