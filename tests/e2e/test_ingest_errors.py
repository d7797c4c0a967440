"""Every refusal of a real `hookline ingest`, over real HTTP: status, JSON body, field errors."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.senders.signatures import sign_standard_webhooks
from tests.conftest import AMQP_URL, delete_streams, new_stream
from tests.processes import UNSIGNED_TRANSACTIONS, Pipeline, eventually, running_pipeline, scalar

SECRET = "whsec_" + base64.b64encode(b"e2e-transactions-signing-secret!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-rotated-out!").decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"a-secret-this-server-never-knew!").decode()
MAX_BODY = 2048


def transaction(n: int | str = 1, **changes: Any) -> dict[str, Any]:
    body = {"transaction_id": f"tx-{n}", "source_account": "acct-a",
            "destination_account": "acct-b", "amount": "10.50", "currency": "EUR", **changes}
    return {k: v for k, v in body.items() if v is not None}


def signed(body: bytes, secret: str = SECRET, at: int | None = None,
           msg_id: str | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    return {"Content-Type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_standard_webhooks(secret, msg_id, timestamp, body)}


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One signed ingest for the module (its own stream); starting one per test is slow."""
    stream = new_stream()
    env = {"HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream,
           "HOOKLINE_TRANSACTIONS_SECRETS": f"{SECRET},{OLD_SECRET}",
           "HOOKLINE_MAX_BODY_BYTES": str(MAX_BODY)}
    with running_pipeline(env, tmp_path_factory.mktemp("ingest"), parts=("ingest",)) as running:
        yield running
    delete_streams(stream)


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """An ingest with no transactions secret, unsigned allowed (development): invalid
    deliveries are refused with 422."""
    stream = new_stream()
    env = {"HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream,
           **UNSIGNED_TRANSACTIONS}
    with running_pipeline(env, tmp_path_factory.mktemp("unsigned"), parts=("ingest",)) as running:
        yield running
    delete_streams(stream)


JSON = {"Content-Type": "application/json"}


def send(ingest: Pipeline, body: bytes | Any, headers: dict[str, str] | None = None,
         source: str = "transactions", method: str = "POST") -> requests.Response:
    return ingest.http.request(method, f"{ingest.ingest_url}/v1/webhooks/{source}",
                               data=body, headers=headers, timeout=30)


def send_signed(ingest: Pipeline, body: bytes, **kwargs: Any) -> requests.Response:
    return send(ingest, body, signed(body, **kwargs))


def refused(response: requests.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    answer: dict[str, Any] = response.json()
    assert answer["error"] == error
    assert isinstance(answer["detail"], str)
    assert answer["detail"]
    return answer


# -- signatures ---------------------------------------------------------------------------------

def test_a_correctly_signed_delivery_is_accepted(ingest: Pipeline) -> None:
    body = orjson.dumps(transaction("signed"))
    answer = send_signed(ingest, body)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": "transactions:tx-signed", "status": "accepted"}


def test_a_delivery_signed_with_the_previous_secret_is_accepted(ingest: Pipeline) -> None:
    body = orjson.dumps(transaction("rotated"))
    assert send_signed(ingest, body, secret=OLD_SECRET).status_code == 202


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def _signature_cases(body: bytes) -> dict[str, dict[str, str]]:
    good = signed(body)
    return {
        "no signature headers": {"Content-Type": "application/json"},
        "no webhook-id": _without(good, "webhook-id"),
        "no webhook-timestamp": _without(good, "webhook-timestamp"),
        "no webhook-signature": _without(good, "webhook-signature"),
        "malformed signature": {**good, "webhook-signature": "v1,not base64!"},
        "signature without version": {**good, "webhook-signature": "deadbeef"},
        "malformed timestamp": {**good, "webhook-timestamp": "yesterday"},
        "wrong secret": signed(body, secret=WRONG_SECRET),
        "other message id": {**good, "webhook-id": "msg_other"},
        "expired": signed(body, at=int(time.time()) - 3600),
        "from the future": signed(body, at=int(time.time()) + 3600),
    }


@pytest.mark.parametrize("case", list(_signature_cases(b"{}")))
def test_a_missing_malformed_wrong_or_expired_signature_is_401(ingest: Pipeline,
                                                               case: str) -> None:
    body = orjson.dumps(transaction("unsigned"))
    refused(send(ingest, body, _signature_cases(body)[case]), 401, "invalid_signature")


def test_a_signed_body_that_was_changed_is_401(ingest: Pipeline) -> None:
    body = orjson.dumps(transaction("tampered"))
    headers = signed(body)
    refused(send(ingest, body.replace(b"10.50", b"99.50"), headers), 401, "invalid_signature")


# -- size and type ------------------------------------------------------------------------------

def _oversized() -> bytes:
    return orjson.dumps(transaction("big", note="x" * MAX_BODY))


def test_a_body_over_the_limit_with_content_length_is_413(ingest: Pipeline) -> None:
    body = _oversized()
    answer = refused(send_signed(ingest, body), 413, "payload_too_large")
    assert str(MAX_BODY) in answer["detail"]


def test_a_chunked_body_over_the_limit_is_413(ingest: Pipeline) -> None:
    body = _oversized()
    chunks = (body[i:i + 256] for i in range(0, len(body), 256))
    answer = send(ingest, chunks, signed(body))
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    refused(answer, 413, "payload_too_large")


def test_a_chunked_body_under_the_limit_is_accepted(ingest: Pipeline) -> None:
    body = orjson.dumps(transaction("chunked"))
    chunks = (body[i:i + 16] for i in range(0, len(body), 16))
    answer = send(ingest, chunks, signed(body))
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/xml", "multipart/form-data; boundary=b"])
def test_a_body_that_is_not_json_by_content_type_is_415(ingest: Pipeline,
                                                        content_type: str | None) -> None:
    body = orjson.dumps(transaction("typed"))
    headers = signed(body)
    headers.pop("Content-Type")
    if content_type:
        headers["Content-Type"] = content_type
    refused(send(ingest, body, headers), 415, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "application/webhook+json", "APPLICATION/JSON"])
def test_json_content_types_with_parameters_or_suffix_are_accepted(ingest: Pipeline,
                                                                   content_type: str) -> None:
    body = orjson.dumps(transaction("json-typed"))
    answer = send(ingest, body, {**signed(body), "Content-Type": content_type})
    assert answer.status_code == 202, answer.text


# -- payload ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"", b"{", b"not json", b'{"amount": NaN}', b"{'single': 'quotes'}",
    b'{"transaction_id": "tx-\xff\xfe"}', b"\xef\xbb\xbf{}",
])
def test_a_body_that_is_not_json_or_not_utf8_is_422(ingest: Pipeline, body: bytes) -> None:
    answer = refused(send_signed(ingest, body), 422, "invalid_payload")
    assert "JSON" in answer["detail"]


@pytest.mark.parametrize("body", [b"[]", b"[{}]", b'"tx-1"', b"12", b"null", b"true"])
def test_a_body_that_is_not_an_object_is_422(ingest: Pipeline, body: bytes) -> None:
    answer = refused(send_signed(ingest, body), 422, "invalid_payload")
    assert answer["fields"] == {"_schema": ["Expected a JSON object."]}


@pytest.mark.parametrize("number", ["0e-99999", "1e-16384", "1.0e-16383", "-0.0e-20000"])
def test_a_number_the_event_store_cannot_keep_is_422_naming_its_field(
        ingest: Pipeline, number: str) -> None:
    # valid JSON, in a field hookline never reads: a 202 here stopped every projection
    body = orjson.dumps(transaction("poison", metadata={"x": "NUMBER"})).replace(
        b'"NUMBER"', number.encode())
    answer = refused(send_signed(ingest, body), 422, "invalid_payload")
    assert list(answer["fields"]) == ["metadata.x"]
    assert "cannot store" in answer["fields"]["metadata.x"][0]


@pytest.mark.parametrize("number", ["1e-16383", "0e99999", "1e308", "-1.5e-16382"])
def test_a_number_at_the_event_stores_limits_is_accepted(ingest: Pipeline, number: str) -> None:
    body = orjson.dumps(transaction(f"edge-{number}", metadata={
        "x": "NUMBER"})).replace(b'"NUMBER"', number.encode())
    assert send_signed(ingest, body).status_code == 202


def test_a_body_nested_deeper_than_the_projector_reads_is_422(ingest: Pipeline) -> None:
    # orjson reads 1024 levels; the projector's exact parse and the ingress limit agree on less
    body = orjson.dumps(transaction("deep", metadata={"x": "DEEP"})).replace(
        b'"DEEP"', b"[" * 930 + b"]" * 930)
    answer = refused(send_signed(ingest, body), 422, "invalid_payload")
    (field,) = answer["fields"]
    assert field.startswith("metadata.x.0.0")
    assert "nested deeper than" in answer["fields"][field][0]


INVALID_FIELDS = [
    ({"transaction_id": ""}, "transaction_id"),
    ({"transaction_id": "x" * 129}, "transaction_id"),
    ({"transaction_id": "é" * 128}, "transaction_id"),
    ({"transaction_id": 17}, "transaction_id"),
    ({"source_account": ""}, "source_account"),
    ({"destination_account": "d" * 129}, "destination_account"),
    ({"amount": -5}, "amount"),
    ({"amount": "-0.01"}, "amount"),
    ({"amount": 0}, "amount"),
    ({"amount": "0.00"}, "amount"),
    ({"amount": "1.23456"}, "amount"),
    ({"amount": 1.23456}, "amount"),
    ({"amount": "12.5.1"}, "amount"),
    ({"amount": "1e3"}, "amount"),
    ({"amount": "1_000"}, "amount"),
    ({"amount": "NaN"}, "amount"),
    ({"amount": "ten"}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": [10]}, "amount"),
    ({"currency": "eur"}, "currency"),
    ({"currency": "EURO"}, "currency"),
    ({"currency": "ABC"}, "currency"),
    ({"status": "lost"}, "status"),
]


@pytest.mark.parametrize(("changes", "field"), INVALID_FIELDS)
def test_each_invalid_field_is_422_with_its_error_under_fields(
        unsigned: Pipeline, changes: dict[str, Any], field: str) -> None:
    answer = refused(send(unsigned, orjson.dumps(transaction("bad", **changes)), JSON),
                     422, "invalid_payload")
    assert set(answer["fields"]) == {field}
    assert all(isinstance(message, str) for message in answer["fields"][field])


@pytest.mark.parametrize(("changes", "field"),
                         [c for c in INVALID_FIELDS if c[1] != "transaction_id"][:6])
def test_a_signed_delivery_with_an_invalid_field_is_recorded_for_rejection(
        ingest: Pipeline, changes: dict[str, Any], field: str) -> None:
    # a signed sender would retry a 4xx for days: it gets 202, the projector rejects it
    answer = send_signed(ingest, orjson.dumps(transaction("bad", **changes)), msg_id="msg_bad1")
    assert answer.status_code == 202, answer.text
    assert answer.json()["id"] == "transactions:invalid:msg_bad1"


def test_a_signed_delivery_without_a_valid_transaction_id_is_still_422(ingest: Pipeline) -> None:
    answer = refused(send_signed(ingest, orjson.dumps(transaction("bad", transaction_id=""))),
                     422, "invalid_payload")
    assert "transaction_id" in answer["fields"]


def test_every_missing_field_is_named(unsigned: Pipeline) -> None:
    answer = refused(send(unsigned, b'{"note": "nothing useful"}', JSON), 422, "invalid_payload")
    assert answer["fields"] == {
        name: ["Missing data for required field."]
        for name in ("transaction_id", "source_account", "destination_account", "amount",
                     "currency")}


# -- routing ------------------------------------------------------------------------------------

def test_an_unknown_source_is_404(ingest: Pipeline) -> None:
    body = orjson.dumps(transaction("routed"))
    answer = refused(send(ingest, body, signed(body), source="paypal"), 404, "unknown_source")
    assert "paypal" in answer["detail"]


def test_an_unknown_path_is_a_json_404(ingest: Pipeline) -> None:
    refused(ingest.http.post(f"{ingest.ingest_url}/v2/elsewhere", data=b"{}", timeout=10),
            404, "not_found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_a_wrong_method_is_405_naming_the_allowed_one(ingest: Pipeline, method: str) -> None:
    answer = send(ingest, b"{}", {"Content-Type": "application/json"}, method=method)
    refused(answer, 405, "method_not_allowed")
    assert "POST" in answer.headers["Allow"]


def test_health_endpoints_answer(ingest: Pipeline) -> None:
    assert ingest.http.get(f"{ingest.ingest_url}/healthz", timeout=10).json() == {
        "status": "alive"}
    ready = ingest.http.get(f"{ingest.ingest_url}/readyz", timeout=10)
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


# -- exact amounts ------------------------------------------------------------------------------

def test_amounts_are_projected_exactly(env: dict[str, str], tmp_path: Path,
                                       db: psycopg.Connection) -> None:
    literals = {"tenth": b"0.1", "long": b"123456789012345.1234",
                "largest": b"999999999999999.9999", "string": b'"0.3000"'}
    with running_pipeline(env, tmp_path, parts=("ingest", "projector")) as running:
        for name, literal in literals.items():
            body = orjson.dumps(transaction(name)).replace(b'"10.50"', literal)
            answer = running.post("transactions", None, data=body)  # signed by the pipeline
            assert answer.status_code == 202, answer.text

        def projected() -> None:
            assert scalar(db, "SELECT count(*) FROM transactions") == len(literals)
        eventually(projected, timeout=30)
    rows = db.execute("SELECT transaction_id, amount::text FROM transactions").fetchall()
    amounts: dict[str, str] = dict(rows)
    assert amounts == {f"tx-{name}": str(Decimal(literal.strip(b'"').decode()))
                       for name, literal in literals.items()}


# -- fuzz ---------------------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    exclude_characters="\x7f"), max_size=80).map(str.lstrip)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
field_values = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=140)
                | st.sampled_from(["10.50", "0.0001", "-1", "1e3", "EUR", "usd", "", "x" * 129])
                | st.decimals(allow_nan=False, allow_infinity=False).map(str))
transactions_like = st.fixed_dictionaries({}, optional={
    name: field_values for name in ("transaction_id", "source_account", "destination_account",
                                    "amount", "currency", "booking_reference", "status",
                                    "failure_reason")
}).map(orjson.dumps)
bodies = (st.binary(max_size=MAX_BODY + 500) | json_values.map(orjson.dumps) | transactions_like
          | st.builds(lambda n: orjson.dumps(transaction(f"fuzz-{n}")), st.integers(0, 10**6)))
content_types = (st.sampled_from(["application/json", "application/json; charset=latin-1",
                                  "text/plain", "application/x+json", "", "*/*",
                                  "multipart/form-data; boundary=x",
                                  "application/x-www-form-urlencoded"]) | header_text)
header_names = st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature",
                                "Content-Encoding", "Transfer-Encoding", "Expect", "X-Other"])


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    body = draw(bodies)
    headers = {"Content-Type": draw(content_types)}
    if draw(st.booleans()):
        headers.update(signed(body, at=draw(st.none() | st.integers(0, 2**40)),
                              msg_id=draw(st.none() | header_text.filter(bool))))
    headers.update(draw(st.dictionaries(header_names, header_text, max_size=3)))
    headers.pop("Transfer-Encoding", None)  # the client frames the body itself
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT"]))
    source = draw(st.sampled_from(["transactions"] * 8 + ["stripe", "%2e%2e", "x" * 300]))
    return method, source, body, headers


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(delivery=deliveries())
def test_fuzzed_requests_never_get_a_5xx(ingest: Pipeline,
                                         delivery: tuple[str, str, bytes, dict[str, str]]) -> None:
    method, source, body, headers = delivery
    answer = send(ingest, body, headers, source=source, method=method)
    assert answer.status_code < 500, answer.text
    protocol_error = answer.status_code in (400, 417) and answer.headers.get(
        "Content-Type") == "text/html"  # refused by the HTTP server before the app saw it
    if answer.status_code >= 400 and not protocol_error:
        assert set(answer.json()) >= {"error", "detail"}


def test_the_server_is_healthy_after_the_fuzz(ingest: Pipeline) -> None:
    assert ingest.processes["ingest"].alive
    body = orjson.dumps(transaction("after-fuzz"))
    assert send_signed(ingest, body).status_code == 202
    assert ingest.http.get(f"{ingest.ingest_url}/readyz", timeout=10).status_code == 200
    assert "Traceback" not in ingest.processes["ingest"].output()
