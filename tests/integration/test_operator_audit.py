"""Tokens with roles and the audit trail: the operator API on a real database (viewers are
refused every action with a 403, operators and plain tokens act), every action of the API and
the CLI leaves an audit row in its own transaction, and /v1/audit lists them."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import psycopg
import pytest
from flask.testing import FlaskClient
from psycopg.rows import dict_row
from sqlalchemy import create_engine

from hookline.config import Settings, load_settings
from hookline.log.topology import ensure_stream, read_log_ends
from hookline.processes.operations import (
    cli_actor,
    events_reject_command,
    outbox_retry_command,
)
from hookline.web.api import create_api
from tests.conftest import AMQP_URL
from tests.operator_seed import seed
from tests.processes import NotYet, eventually

VIEWER = "viewer-token-of-32-bytes-0000001"
OPERATOR = "operator-token-of-32-bytes-00001"
PLAIN = "plain-token-of-32-bytes-00000001"
TOKENS = f"ana:viewer:{VIEWER},ops:operator:{OPERATOR},{PLAIN}"
# seeded emails: id % 10 is 7 pending, 8 failed, 9 dead, else sent
DEAD, OTHER_DEAD, FAILED, SENT = 9, 19, 8, 1
Row = dict[str, Any]


@pytest.fixture
def roles(database_url: str, stream: str) -> Settings:
    return load_settings({"HOOKLINE_DATABASE_URL": database_url, "HOOKLINE_AMQP_URL": AMQP_URL,
                          "HOOKLINE_STREAM": stream, "HOOKLINE_OPERATOR_TOKENS": TOKENS})


@pytest.fixture
def rows(database_url: str) -> Iterator[psycopg.Connection[Row]]:
    """The test's database with 20 emails, as dicts."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        seed(conn, emails=20)
        yield conn


@pytest.fixture
def client(roles: Settings) -> Iterator[FlaskClient]:
    engine = create_engine(roles.database_url)
    yield create_api(roles, engine).test_client()
    engine.dispose()


def call(client: FlaskClient, method: str, path: str, token: str) -> Any:
    return client.open(path, method=method, headers={"Authorization": f"Bearer {token}"})


def retry(client: FlaskClient, email_id: int, token: str) -> Any:
    return call(client, "POST", f"/v1/outbox/{email_id}/retry", token)


def status_of(rows: psycopg.Connection[Row], email_id: int) -> str:
    found = rows.execute("SELECT status FROM email_outbox WHERE id = %s", (email_id,)).fetchone()
    assert found is not None
    return str(found["status"])


def audit_rows(rows: psycopg.Connection[Row]) -> list[Row]:
    return rows.execute("SELECT actor, action, targets, detail, outcome FROM operator_audit "
                        "ORDER BY id").fetchall()


def test_a_viewer_reads_but_is_refused_the_retry_and_the_refusal_is_audited(
        client: FlaskClient, rows: psycopg.Connection[Row]) -> None:
    for path in ("/v1/outbox", "/v1/audit", "/v1/events", "/v1/outbox?status=dead"):
        assert call(client, "GET", path, VIEWER).status_code == 200, path

    refused = retry(client, DEAD, VIEWER)

    assert refused.status_code == 403
    assert refused.json["error"] == "forbidden"
    assert "'ana' is a viewer" in refused.json["detail"]
    assert status_of(rows, DEAD) == "dead"
    assert audit_rows(rows) == [{"actor": "ana", "action": "outbox.retry",
                                 "targets": [f"outbox:{DEAD}"], "detail": {"role": "viewer"},
                                 "outcome": "refused"}]


def test_an_operator_and_a_plain_token_retry_and_each_retry_is_audited(
        client: FlaskClient, rows: psycopg.Connection[Row]) -> None:
    assert retry(client, DEAD, OPERATOR).status_code == 200
    assert retry(client, FAILED, PLAIN).status_code == 200
    assert retry(client, SENT, OPERATOR).status_code == 409
    assert retry(client, 999_999, OPERATOR).status_code == 404

    assert (status_of(rows, DEAD), status_of(rows, FAILED)) == ("pending", "pending")
    found = audit_rows(rows)
    assert [(r["actor"], r["targets"], r["outcome"]) for r in found] == [
        ("ops", [f"outbox:{DEAD}"], "succeeded"), ("token-3", [f"outbox:{FAILED}"], "succeeded"),
        ("ops", [f"outbox:{SENT}"], "failed"), ("ops", ["outbox:999999"], "failed")]
    assert {r["action"] for r in found} == {"outbox.retry"}
    assert found[0]["detail"] == {"template": "booking_confirmation"}
    assert found[2]["detail"]["status"] == 409
    assert "sent" in found[2]["detail"]["error"]


def test_a_retry_whose_audit_row_cannot_be_written_does_not_happen(
        client: FlaskClient, rows: psycopg.Connection[Row]) -> None:
    refuse_audit_rows(rows)

    assert retry(client, DEAD, OPERATOR).status_code == 500

    assert status_of(rows, DEAD) == "dead"  # rolled back with its audit row


def refuse_audit_rows(rows: psycopg.Connection[Row]) -> None:
    rows.execute("ALTER TABLE operator_audit ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")


def test_every_post_route_of_the_api_requires_a_role(client: FlaskClient) -> None:
    app = client.application
    posts = [rule for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())]
    assert posts  # the outbox retry at least
    for rule in posts:
        assert getattr(app.view_functions[rule.endpoint], "required_role", None) == \
            "operator", rule.rule


def test_the_audit_list_is_documented_with_its_filters_and_the_retry_with_its_403(
        client: FlaskClient) -> None:
    spec = call(client, "GET", "/v1/openapi.json", VIEWER).json
    listing = spec["paths"]["/v1/audit"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "limit", "cursor", "actor", "action", "outcome", "at_after", "at_before"}
    assert "AuditPage" in str(listing["responses"]["200"])
    assert "403" in spec["paths"]["/v1/outbox/{email_id}/retry"]["post"]["responses"]


def test_the_audit_list_filters_by_actor_action_outcome_and_time_newest_first(
        client: FlaskClient, rows: psycopg.Connection[Row]) -> None:
    retry(client, DEAD, VIEWER)
    retry(client, DEAD, OPERATOR)
    retry(client, OTHER_DEAD, PLAIN)
    rows.execute("UPDATE operator_audit SET at = at - interval '1 day' WHERE actor = 'ana'")
    now = datetime.now(UTC)

    def listed(query: str) -> list[tuple[str, str]]:
        answer = call(client, "GET", f"/v1/audit?{query}", VIEWER)
        assert answer.status_code == 200, answer.json
        return [(item["actor"], item["outcome"]) for item in answer.json["items"]]

    assert listed("") == [("token-3", "succeeded"), ("ops", "succeeded"), ("ana", "refused")]
    assert listed("actor=ops") == [("ops", "succeeded")]
    assert listed("action=outbox.retry&outcome=refused") == [("ana", "refused")]
    assert listed("action=events.reject") == []
    since = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert listed(f"at_after={since}") == [("token-3", "succeeded"), ("ops", "succeeded")]
    assert listed(f"at_before={since}") == [("ana", "refused")]


def test_the_audit_list_walks_pages_by_cursor_and_refuses_bad_arguments(
        client: FlaskClient, rows: psycopg.Connection[Row]) -> None:
    for email_id in (DEAD, OTHER_DEAD, FAILED):
        retry(client, email_id, OPERATOR)
    seen, cursor = [], ""
    while True:
        page = call(client, "GET", f"/v1/audit?limit=2{cursor}", VIEWER).json
        seen += [item["targets"][0] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [f"outbox:{FAILED}", f"outbox:{OTHER_DEAD}", f"outbox:{DEAD}"]
    for query in ("outcome=won", "at_after=yesterday", "limit=0", "cursor=abc", "who=ana",
                  "actor="):
        answer = call(client, "GET", f"/v1/audit?{query}", VIEWER)
        assert answer.status_code == 400, query
        assert answer.json["fields"], query


def test_no_token_appears_in_the_audit_table_or_the_logs(
        client: FlaskClient, rows: psycopg.Connection[Row],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (VIEWER, OPERATOR, PLAIN):
        retry(client, DEAD, token)
        retry(client, SENT, token)
        call(client, "GET", "/v1/audit", token)
    retry(client, DEAD, "a-wrong-token-of-32-bytes-000001")

    stored = rows.execute("SELECT string_agg(operator_audit::text, ' ') AS t "
                          "FROM operator_audit").fetchone()
    assert stored is not None
    assert "ana" in stored["t"]
    assert "ops" in caplog.text
    for token in (VIEWER, OPERATOR, PLAIN, "a-wrong-token"):
        assert token not in stored["t"]
        assert token not in caplog.text


def test_the_cli_retries_are_audited_as_the_os_user(
        roles: Settings, rows: psycopg.Connection[Row]) -> None:
    outbox_retry_command(roles, argparse.Namespace(id=DEAD, all_dead=False))
    with pytest.raises(SystemExit):
        outbox_retry_command(roles, argparse.Namespace(id=SENT, all_dead=False))
    outbox_retry_command(roles, argparse.Namespace(id=None, all_dead=True))

    actor = cli_actor()
    assert actor.startswith("cli:")
    assert len(actor) > len("cli:")
    assert [(r["actor"], r["action"], r["targets"], r["outcome"]) for r in audit_rows(rows)] == [
        (actor, "outbox.retry", [f"outbox:{DEAD}"], "succeeded"),
        (actor, "outbox.retry", [f"outbox:{SENT}"], "failed"),
        (actor, "outbox.retry_dead", [f"outbox:{OTHER_DEAD}"], "succeeded")]
    assert status_of(rows, OTHER_DEAD) == "pending"


def test_a_cli_retry_whose_audit_row_cannot_be_written_does_not_happen(
        roles: Settings, rows: psycopg.Connection[Row]) -> None:
    refuse_audit_rows(rows)
    with pytest.raises(psycopg.errors.CheckViolation):
        outbox_retry_command(roles, argparse.Namespace(id=DEAD, all_dead=False))
    assert status_of(rows, DEAD) == "dead"


def test_the_cli_rejection_is_audited_with_its_reason_and_a_late_one_as_failed(
        roles: Settings, rows: psycopg.Connection[Row]) -> None:
    append_records(roles, 3)
    reject = argparse.Namespace(offset=2, partition=0, reason="crashes the mapper")
    events_reject_command(roles, reject)
    rows.execute("INSERT INTO consumer_offsets (consumer, last_offset) VALUES ('projector', 1)")
    with pytest.raises(SystemExit):
        events_reject_command(roles, argparse.Namespace(offset=0, partition=0, reason="late"))

    first, late = audit_rows(rows)
    assert (first["action"], first["targets"], first["outcome"]) == (
        "events.reject", ["events:0:2"], "succeeded")
    assert first["detail"] == {"reason": "crashes the mapper", "replaced": False}
    assert (late["targets"], late["outcome"]) == (["events:0:0"], "failed")
    assert "already projected" in late["detail"]["error"]
    assert first["actor"] == late["actor"] == cli_actor()


def append_records(settings: Settings, count: int) -> None:
    """`count` records on the log (what they hold does not matter to a rejection)."""
    ensure_stream(settings)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.confirm_delivery()
    for n in range(count):
        channel.basic_publish("", settings.stream, f"record {n}".encode())
    connection.close()

    def appended() -> None:
        (end,) = read_log_ends(settings).partitions
        if end.end_offset != count - 1:
            raise NotYet(f"the log ends at {end.end_offset}")

    eventually(appended)
