"""Stripe and Chapa end to end: their real payloads, signed as they sign, through the real
ingest, stream, projector and PostgreSQL."""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from hookline.senders.signatures import sign_chapa, sign_stripe
from tests.conftest import (
    AMQP_URL,
    PG_ADMIN,
    copy_database,
    delete_streams,
    drop_database,
    new_stream,
)
from tests.processes import Pipeline, eventually, running_pipeline

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "providers"
STRIPE_OLD, STRIPE_NEW, STRIPE_UNKNOWN = ("whsec_e2e_old_secret_0001", "whsec_e2e_new_secret_0001",
                                         "whsec_e2e_never_secret_0001")
CHAPA_OLD, CHAPA_NEW, CHAPA_UNKNOWN = ("chapa-e2e-old-secret-0001", "chapa-e2e-new-secret-0001",
                                      "chapa-e2e-never-secret-0001")
MAX_BODY = 64 * 1024
Row = dict[str, Any]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


OPENAPI = fixture("stripe_openapi_fixtures3_subset.json")["resources"]


@dataclass
class Providers:
    pipeline: Pipeline
    db: psycopg.Connection[Row]


@pytest.fixture(scope="module")
def providers(template_database: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Providers]:
    """One pipeline for the module (its own database and stream): each test uses its own ids."""
    name, stream = copy_database(template_database), new_stream()
    url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    env = {"HOOKLINE_DATABASE_URL": url.replace("postgresql://", "postgresql+psycopg://", 1),
           "HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream,
           "HOOKLINE_STRIPE_SECRETS": f"{STRIPE_OLD},{STRIPE_NEW}",
           "HOOKLINE_CHAPA_SECRETS": f"{CHAPA_OLD},{CHAPA_NEW}",
           "HOOKLINE_MAX_BODY_BYTES": str(MAX_BODY)}
    try:
        with running_pipeline(env, tmp_path_factory.mktemp("providers")) as pipeline, \
                psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
            yield Providers(pipeline, db)
    finally:
        drop_database(name)
        delete_streams(stream)


# --- building and sending what the providers send ---------------------------------------------


def stripe_event(kind: str, resource: str, event_id: str, **changes: Any) -> dict[str, Any]:
    """An OpenAPI fixture object wrapped in the fixture event envelope, as its note says."""
    obj = {**copy.deepcopy(OPENAPI[resource]), **changes}
    return {**copy.deepcopy(OPENAPI["event"]), "id": event_id, "type": kind,
            "created": int(time.time()), "data": {"object": obj}}


def stripe_header(body: bytes, secrets: tuple[str, ...] = (STRIPE_NEW,),
                  at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    signatures = [sign_stripe(s, timestamp, body).partition(",v1=")[2] for s in secrets]
    return ",".join([f"t={timestamp}", *(f"v1={s}" for s in signatures)])


def post(providers: Providers, source: str, body: bytes,
         headers: dict[str, str]) -> requests.Response:
    pipeline = providers.pipeline
    return pipeline.http.post(f"{pipeline.ingest_url}/v1/webhooks/{source}", data=body,
                              headers={"Content-Type": "application/json", **headers},
                              timeout=30)


def post_stripe(providers: Providers, event: dict[str, Any] | bytes,
                secrets: tuple[str, ...] = (STRIPE_NEW,), at: int | None = None,
                signed: bytes | None = None) -> requests.Response:
    body = event if isinstance(event, bytes) else orjson.dumps(event)
    header = stripe_header(body if signed is None else signed, secrets, at)
    return post(providers, "stripe", body, {"Stripe-Signature": header})


def post_chapa(providers: Providers, payload: dict[str, Any] | bytes,
               secret: str = CHAPA_NEW, headers: dict[str, str] | None = None,
               ) -> requests.Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return post(providers, "chapa", body, sign_chapa(secret, body) if headers is None else headers)


def accepted(response: requests.Response) -> str:
    assert response.status_code == 202, response.text
    envelope_id: str = response.json()["id"]
    return envelope_id


def refused(response: requests.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def projected(providers: Providers, transaction_id: str, **expected: Any) -> Row:
    """The transaction once it has the expected fields (amounts compared as exact text)."""
    def check() -> Row:
        row = providers.db.execute("SELECT * FROM transactions WHERE transaction_id = %s",
                                   (transaction_id,)).fetchone()
        assert row is not None, f"no transaction {transaction_id}"
        shown = {k: str(row[k]) if k in ("amount", "refunded_amount") else row[k]
                 for k in expected}
        assert shown == expected
        return row
    return eventually(check, timeout=30)


def recorded(providers: Providers, envelope_id: str) -> Row:
    def check() -> Row:
        row = providers.db.execute(
            "SELECT * FROM events WHERE id = %s AND outcome <> 'duplicate'", (envelope_id,)
        ).fetchone()
        assert row is not None, f"no event {envelope_id}"
        return row
    return eventually(check, timeout=30)


# --- real payloads in, the right transaction out ----------------------------------------------


STRIPE_CASES = {
    "usd intent succeeded": (
        stripe_event("payment_intent.succeeded", "payment_intent", "evt_e2e_usd",
                     id="pi_e2e_usd", status="succeeded",
                     metadata={"booking_reference": "BK-USD"}),
        "pi_e2e_usd", {"status": "succeeded", "amount": "10.99", "currency": "USD",
                       "booking_reference": "BK-USD"}),
    "zero-decimal JPY": (
        stripe_event("payment_intent.succeeded", "payment_intent", "evt_e2e_jpy",
                     id="pi_e2e_jpy", currency="jpy", amount=5000, status="succeeded"),
        "pi_e2e_jpy", {"status": "succeeded", "amount": "5000", "currency": "JPY"}),
    "three-decimal KWD failed": (
        stripe_event("payment_intent.payment_failed", "payment_intent", "evt_e2e_kwd",
                     id="pi_e2e_kwd", currency="kwd", amount=12345,
                     last_payment_error={"type": "card_error",
                                         "message": "Your card has insufficient funds."}),
        "pi_e2e_kwd", {"status": "failed", "amount": "12.345", "currency": "KWD",
                       "failure_reason": "Your card has insufficient funds."}),
    "charge partially refunded": (
        stripe_event("charge.refunded", "charge", "evt_e2e_refund", id="ch_e2e_refund",
                     payment_intent="pi_e2e_refund", captured=True, amount_captured=100,
                     amount_refunded=40),
        "pi_e2e_refund", {"status": "partially_refunded", "amount": "1.00",
                          "refunded_amount": "0.40", "provider_reference": "ch_e2e_refund"}),
    "checkout session paid": (
        stripe_event("checkout.session.completed", "checkout.session", "evt_e2e_cs",
                     payment_intent="pi_e2e_cs", payment_status="paid", amount_total=1099,
                     currency="usd", client_reference_id="user_77",
                     metadata={"booking_reference": "BK-CS"}),
        "pi_e2e_cs", {"status": "succeeded", "amount": "10.99", "booking_reference": "BK-CS"}),
    "real checkout.session.completed event": (
        fixture("stripe_checkout.session.completed.json"),
        "pi_000", {"status": "succeeded", "amount": "20.00", "currency": "USD",
                   "booking_reference": None, "source": "stripe"}),  # a user id: no booking
}


@pytest.mark.parametrize("case", list(STRIPE_CASES))
def test_stripe_payload_signed_by_stripe_scheme_is_projected_with_status_amount_reference(
        providers: Providers, case: str) -> None:
    event, transaction_id, expected = STRIPE_CASES[case]
    envelope_id = accepted(post_stripe(providers, event))
    assert envelope_id == f"stripe:{event['id']}"
    projected(providers, transaction_id, **expected)
    assert recorded(providers, envelope_id)["outcome"] == "applied"
    api = providers.pipeline.get(f"/v1/transactions/{transaction_id}").json()
    assert (api["amount"], api["status"]) == (expected["amount"], expected["status"])


def test_a_checkout_session_its_intent_and_its_charge_are_one_transaction(
        providers: Providers) -> None:
    session = stripe_event("checkout.session.completed", "checkout.session", "evt_fold_cs",
                           payment_intent="pi_fold", payment_status="paid", amount_total=1099,
                           currency="usd", metadata={"booking_reference": "BK-FOLD"})
    intent = stripe_event("payment_intent.succeeded", "payment_intent", "evt_fold_pi",
                          id="pi_fold", status="succeeded", latest_charge="ch_fold")
    refund = stripe_event("charge.refunded", "charge", "evt_fold_ch", id="ch_fold",
                          payment_intent="pi_fold", amount=1099, amount_captured=1099,
                          amount_refunded=1099, refunded=True)
    dispute = {**copy.deepcopy(OPENAPI["event"]), "id": "evt_fold_dp",
               "type": "charge.dispute.created",
               "data": {"object": {"id": "dp_fold", "object": "dispute", "amount": 1099,
                                   "currency": "usd", "charge": "ch_fold",
                                   "payment_intent": "pi_fold"}}}
    for event in (refund, dispute, intent, session):  # newest first: order must not matter
        accepted(post_stripe(providers, event))

    projected(providers, "pi_fold", status="refunded", amount="10.99", refunded_amount="10.99",
              booking_reference="BK-FOLD", provider_reference="ch_fold", disputed=True)
    rows = providers.db.execute("SELECT count(*) AS n FROM transactions "
                                "WHERE transaction_id LIKE %s", ("%fold%",)).fetchone()
    assert rows == {"n": 1}


def test_chapa_documented_payloads_are_projected_by_tx_ref(providers: Providers) -> None:
    succeeded = accepted(post_chapa(providers, fixture("chapa_charge.success.json")))
    projected(providers, "4FGFF4FFGD3", status="succeeded", amount="400.00", currency="ETB",
              provider_reference="AP634JFwEbxd", booking_reference=None,
              source="chapa")
    refunded = accepted(post_chapa(providers, fixture("chapa_charge.refunded.json")))
    projected(providers, "4FGFF4FFGD3", status="refunded", refunded_amount="400.00")
    assert succeeded != refunded

    declined = {**fixture("chapa_charge.failed_cancelled.json"), "tx_ref": "BK-CHAPA-DECLINED"}
    declined_id = accepted(post_chapa(providers, declined))
    projected(providers, "BK-CHAPA-DECLINED", status="failed", amount="400.00",
              booking_reference=None)  # a tx_ref is not taken for a booking reference
    assert recorded(providers, declined_id)["subject"] == "BK-CHAPA-DECLINED"

    payout = accepted(post_chapa(providers, fixture("chapa_payout.success.json")))
    assert recorded(providers, payout)["outcome"] == "ignored"


def test_a_chapa_retry_of_the_same_delivery_is_a_duplicate(providers: Providers) -> None:
    payload = {**fixture("chapa_charge.success.json"), "tx_ref": "BK-CHAPA-RETRY",
               "meta": {"booking_reference": "BK-RETRY"}}
    first = accepted(post_chapa(providers, payload))
    retry = accepted(post_chapa(providers, {**payload, "updated_at": "2023-08-27T19:31:27Z"},
                                secret=CHAPA_OLD))
    assert first == retry

    def both_recorded() -> None:
        outcomes = [r["outcome"] for r in providers.db.execute(
            "SELECT outcome FROM events WHERE id = %s ORDER BY \"offset\"", (first,))]
        assert outcomes == ["applied", "duplicate"]
    eventually(both_recorded, timeout=30)
    projected(providers, "BK-CHAPA-RETRY", booking_reference="BK-RETRY", status="succeeded")


# --- what hookline records but does not act on ------------------------------------------------


def test_unknown_stripe_event_types_are_accepted_and_ignored(providers: Providers) -> None:
    plan_created = OPENAPI["event"]  # the fixture's own event: plan.created
    intent_created = {**fixture("stripe_payment_intent.created.json"), "id": "evt_e2e_created"}
    for event in (plan_created, intent_created):
        row = recorded(providers, accepted(post_stripe(providers, event)))
        assert (row["outcome"], row["type"]) == ("ignored", event["type"])


def test_signed_but_incomplete_payloads_are_accepted_and_rejected_with_the_reason(
        providers: Providers) -> None:
    no_amount = stripe_event("payment_intent.succeeded", "payment_intent", "evt_e2e_partial",
                             id="pi_e2e_partial", amount=None)
    row = recorded(providers, accepted(post_stripe(providers, no_amount)))
    assert row["outcome"] == "rejected"
    assert "data.object.amount" in row["error"]

    no_currency = {**fixture("chapa_charge.success.json"), "tx_ref": "BK-CHAPA-NOCUR",
                   "currency": None}
    row = recorded(providers, accepted(post_chapa(providers, no_currency)))
    assert row["outcome"] == "rejected"
    assert "currency" in row["error"]
    found = providers.db.execute(
        "SELECT count(*) AS n FROM transactions WHERE transaction_id IN (%s, %s)",
        ("pi_e2e_partial", "BK-CHAPA-NOCUR")).fetchone()
    assert found == {"n": 0}


# --- refusals, each from a real request, none a 5xx -------------------------------------------


def test_a_bad_stripe_or_chapa_signature_is_401(providers: Providers) -> None:
    event = stripe_event("payment_intent.succeeded", "payment_intent", "evt_e2e_bad")
    body = orjson.dumps(event)
    refused(post_stripe(providers, body, secrets=(STRIPE_UNKNOWN,)), 401, "invalid_signature")
    tampered = body.replace(b"1099", b"9999")
    refused(post_stripe(providers, tampered, signed=body), 401, "invalid_signature")
    refused(post(providers, "stripe", body, {}), 401, "invalid_signature")

    payload = orjson.dumps(fixture("chapa_charge.success.json"))
    refused(post_chapa(providers, payload, secret=CHAPA_UNKNOWN), 401, "invalid_signature")
    refused(post_chapa(providers, payload, headers={}), 401, "invalid_signature")


def test_an_expired_or_future_stripe_timestamp_is_401(providers: Providers) -> None:
    event = stripe_event("payment_intent.succeeded", "payment_intent", "evt_e2e_late")
    now = int(time.time())
    for at in (now - 400, now + 400):
        refused(post_stripe(providers, event, at=at), 401, "invalid_signature")
    accepted(post_stripe(providers, event, at=now - 200))


def test_old_and_new_secrets_both_verify_during_rotation(providers: Providers) -> None:
    for n, secrets in enumerate([(STRIPE_OLD,), (STRIPE_NEW,), (STRIPE_UNKNOWN, STRIPE_OLD)]):
        event = stripe_event("payment_intent.created", "payment_intent", f"evt_rotate_{n}")
        accepted(post_stripe(providers, event, secrets=secrets))
    payload = {**fixture("chapa_payout.success.json"), "reference": "ROTATE"}
    for secret in (CHAPA_OLD, CHAPA_NEW):
        accepted(post_chapa(providers, payload, secret=secret))
    body = orjson.dumps(payload)
    signature_mode = {"chapa-signature": sign_chapa(CHAPA_OLD, body)["chapa-signature"]}
    accepted(post_chapa(providers, body, headers=signature_mode))


def test_an_oversized_body_is_413(providers: Providers) -> None:
    url = f"{providers.pipeline.ingest_url}/v1/webhooks"
    event = orjson.dumps(stripe_event("payment_intent.succeeded", "payment_intent",
                                      "evt_e2e_big", description="x" * MAX_BODY))
    payload = orjson.dumps({**fixture("chapa_charge.success.json"), "padding": "x" * MAX_BODY})
    for source, body, headers in (("stripe", event, {"Stripe-Signature": stripe_header(event)}),
                                  ("chapa", payload, sign_chapa(CHAPA_NEW, payload))):
        # a connection of its own: the server drops it after refusing an unread body
        answer = requests.post(f"{url}/{source}", data=body, timeout=30,
                               headers={"Content-Type": "application/json", **headers})
        refused(answer, 413, "payload_too_large")


def test_non_json_or_a_body_without_its_idempotency_key_is_422(providers: Providers) -> None:
    no_id = stripe_event("payment_intent.succeeded", "payment_intent", "evt")
    del no_id["id"]
    for body in (b"not json at all", b"{\"id\": \"evt_trunc", orjson.dumps(no_id)):
        refused(post_stripe(providers, body), 422, "invalid_payload")
    no_refs = {k: v for k, v in fixture("chapa_charge.success.json").items()
               if k not in ("tx_ref", "reference")}
    for body in (b"<xml/>", orjson.dumps(no_refs)):
        refused(post_chapa(providers, body), 422, "invalid_payload")


def test_a_duplicate_storm_has_one_effect_per_event(providers: Providers) -> None:
    events = [stripe_event("payment_intent.succeeded", "payment_intent", f"evt_storm_{n}",
                           id=f"pi_storm_{n}", amount=100 + n, status="succeeded")
              for n in range(100)]
    deliveries = [orjson.dumps(event) for event in events for _ in range(5)]
    random.shuffle(deliveries)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda body: post_stripe(providers, body), deliveries))
    assert [a.status_code for a in answers] == [202] * 500

    def settled() -> None:
        rows = providers.db.execute(
            "SELECT outcome, count(*) AS n FROM events WHERE id LIKE 'stripe:evt_storm_%' "
            "GROUP BY outcome").fetchall()
        assert {r["outcome"]: r["n"] for r in rows} == {"applied": 100, "duplicate": 400}
    eventually(settled, timeout=60)
    effects = providers.db.execute(
        "SELECT count(*) AS n, sum(amount) AS total FROM transactions "
        "WHERE transaction_id LIKE 'pi_storm_%' AND status = 'succeeded'").fetchone()
    assert effects == {"n": 100, "total": Decimal(sum(range(100, 200))).scaleb(-2)}


# --- a source without a secret ----------------------------------------------------------------


def test_a_source_without_a_secret_answers_404_and_warns_at_start(
        env: dict[str, str], tmp_path: Path) -> None:
    only_stripe = {**env, "HOOKLINE_STRIPE_SECRETS": STRIPE_NEW}
    with running_pipeline(only_stripe, tmp_path, parts=("ingest",)) as ingest:
        url = f"{ingest.ingest_url}/v1/webhooks"
        body = orjson.dumps(fixture("chapa_charge.success.json"))
        answer = ingest.http.post(f"{url}/chapa", data=body, timeout=10,
                                  headers={"Content-Type": "application/json",
                                           **sign_chapa(CHAPA_NEW, body)})
        assert answer.status_code == 404
        assert answer.json()["error"] == "unknown_source"
        unsigned = ingest.http.post(f"{url}/stripe", data=b"{}", timeout=10,
                                    headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 401
        log = ingest.processes["ingest"].output()
        assert "HOOKLINE_CHAPA_SECRETS is not set" in log
        assert "HOOKLINE_STRIPE_SECRETS is not set" not in log
