"""The Stripe source without I/O: what ingress keys and refuses, what a record means."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.config import Settings, load_settings
from hookline.domain.events import PaymentDisputed, PaymentRefunded, PaymentReported, Rejected
from hookline.log.envelope import Envelope
from hookline.senders import stripe
from hookline.senders.base import PayloadInvalid
from hookline.senders.signatures import InvalidSignature, sign_stripe
from tests.unit.payments import RECEIVED, no_negative_amount_unless_rejected

SECRET = "whsec_unit_test_secret_0001"


def event(kind: str, obj: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "type": kind, "created": 1714521600,
            "data": {"object": obj}, **extra}


def intent(**fields: Any) -> dict[str, Any]:
    return {"id": "pi_1", "object": "payment_intent", "amount": 1099, "amount_received": 0,
            "currency": "usd", "metadata": {}, "created": 1714500000, **fields}


def accept(body: dict[str, Any] | bytes, tolerance: int = 300, at: int | None = None) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    ingress = stripe.ingress(Settings(stripe_secrets=(SECRET,), stripe_tolerance=tolerance))
    assert ingress is not None
    header = sign_stripe(SECRET, int(time.time()) if at is None else at, raw)
    return ingress.accept({"Stripe-Signature": header}, raw)


def interpret(body: dict[str, Any]) -> list[Any]:
    envelope = Envelope("stripe:" + body["id"], "stripe", body["type"], "s", RECEIVED,
                        orjson.dumps(body))
    return stripe.interpret(envelope)


def test_the_event_id_is_the_key_and_the_booking_reference_the_subject() -> None:
    delivery = accept(event("payment_intent.succeeded",
                            intent(metadata={"booking_reference": "BK-7"})))
    assert (delivery.key, delivery.type, delivery.subject) == (
        "evt_1", "payment_intent.succeeded", "BK-7")


def test_without_a_booking_reference_the_subject_is_the_payment_intent() -> None:
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_9", "metadata": {}}
    assert accept(event("charge.refunded", charge)).subject == "pi_9"
    # client_reference_id is the merchant's own (often a user id): never taken for a booking
    session = {"id": "cs_1", "object": "checkout.session", "client_reference_id": "BK-3",
               "payment_intent": "pi_9", "metadata": {}}
    assert accept(event("checkout.session.completed", session)).subject == "pi_9"


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", orjson.dumps({"type": "payment_intent.succeeded"}),
    orjson.dumps({"id": 42, "type": "payment_intent.succeeded"}),
    orjson.dumps({"id": "evt_1"}),
])
def test_a_body_that_is_not_an_event_with_an_id_is_invalid(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        accept(body)


def test_the_tolerance_setting_bounds_the_signature_age() -> None:
    old = int(time.time()) - 500
    with pytest.raises(InvalidSignature):
        accept(event("payment_intent.succeeded", intent()), at=old)
    assert accept(event("payment_intent.succeeded", intent()), tolerance=600, at=old).key
    assert load_settings({"HOOKLINE_STRIPE_TOLERANCE": "10m"}).stripe_tolerance == 600
    assert load_settings({}).stripe_tolerance == 300


def test_no_secret_means_no_stripe_endpoint() -> None:
    assert stripe.ingress(Settings()) is None


@pytest.mark.parametrize(("currency", "minor", "major"), [
    ("usd", 1099, "10.99"), ("jpy", 5000, "5000"), ("kwd", 12345, "12.345"),
    ("isk", 50000, "500.00"), ("mga", 3000, "3000"),
])
def test_amounts_are_converted_with_the_currency_exponent(
        currency: str, minor: int, major: str) -> None:
    [reported] = interpret(event("payment_intent.succeeded",
                                 intent(currency=currency, amount=minor)))
    assert (str(reported.amount), reported.currency) == (major, currency.upper())


def test_intent_events_map_to_payment_status() -> None:
    expected = {"payment_intent.processing": "pending", "payment_intent.succeeded": "succeeded",
                "payment_intent.payment_failed": "failed", "payment_intent.canceled": "failed"}
    for kind, status in expected.items():
        [reported] = interpret(event(kind, intent()))
        assert (reported.transaction_id, reported.status) == ("pi_1", status)


def test_a_failed_intent_keeps_the_last_payment_error_message() -> None:
    failed = intent(last_payment_error={"message": "Your card was declined."},
                    latest_charge="ch_2")
    [reported] = interpret(event("payment_intent.payment_failed", failed))
    assert (reported.failure_reason, reported.provider_reference) == (
        "Your card was declined.", "ch_2")
    [canceled] = interpret(event("payment_intent.canceled",
                                 intent(cancellation_reason="abandoned")))
    assert canceled.failure_reason == "canceled: abandoned"


def test_a_succeeded_intent_reports_what_was_captured() -> None:
    [reported] = interpret(event("payment_intent.succeeded", intent(amount_received=800)))
    assert reported.amount == Decimal("8.00")


def test_checkout_sessions_fold_into_their_payment_intent() -> None:
    session = {"id": "cs_1", "object": "checkout.session", "payment_intent": "pi_1",
               "mode": "payment", "amount_total": 2000, "currency": "eur",
               "client_reference_id": "user_42", "metadata": {"booking_reference": "BK-1"},
               "created": 1714500000}
    cases = {("checkout.session.completed", "paid"): "succeeded",
             ("checkout.session.completed", "unpaid"): "pending",
             ("checkout.session.async_payment_succeeded", "paid"): "succeeded",
             ("checkout.session.async_payment_failed", "unpaid"): "failed"}
    for (kind, payment_status), status in cases.items():
        [reported] = interpret(event(kind, {**session, "payment_status": payment_status}))
        assert (reported.transaction_id, reported.status, reported.amount,
                reported.booking_reference) == ("pi_1", status, Decimal("20.00"), "BK-1")
    free = {**session, "payment_status": "no_payment_required"}
    assert interpret(event("checkout.session.completed", free)) == []


def test_a_refunded_charge_reports_its_intent_succeeded_and_the_running_total() -> None:
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 1099,
              "amount_captured": 1099, "amount_refunded": 500, "currency": "usd"}
    reported, refunded = interpret(event("charge.refunded", charge))
    assert isinstance(reported, PaymentReported)
    assert isinstance(refunded, PaymentRefunded)
    assert (reported.transaction_id, reported.status, reported.amount,
            reported.provider_reference) == ("pi_1", "succeeded", Decimal("10.99"), "ch_1")
    assert (refunded.transaction_id, refunded.amount_refunded) == ("pi_1", Decimal("5.00"))


def test_a_charge_without_an_intent_is_its_own_payment() -> None:
    charge = {"id": "ch_legacy", "object": "charge", "payment_intent": None, "amount": 100,
              "amount_refunded": 100, "currency": "usd"}
    assert {e.transaction_id for e in interpret(event("charge.refunded", charge))} == {
        "ch_legacy"}


def test_a_dispute_flags_the_payment_it_disputes() -> None:
    dispute = {"id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": "pi_1"}
    assert interpret(event("charge.dispute.created", dispute)) == [PaymentDisputed("pi_1")]


def test_other_event_types_mean_nothing_to_hookline() -> None:
    assert interpret(event("payment_intent.created", intent())) == []
    assert interpret(event("customer.created", {"id": "cus_1"})) == []


@pytest.mark.parametrize(("kind", "obj", "reason"), [
    ("payment_intent.succeeded", intent(amount=None), "data.object.amount"),
    ("payment_intent.succeeded", intent(currency="xyz"), "data.object.currency"),
    ("payment_intent.succeeded", intent(amount=10.5), "data.object.amount"),
    ("checkout.session.completed", {"object": "checkout.session", "payment_status": "paid"},
     "data.object.payment_intent"),
    ("charge.refunded", {"id": "ch_1", "object": "charge", "currency": "usd"},
     "data.object.amount_refunded"),
    ("charge.dispute.created", {"id": "dp_1", "object": "dispute"}, "payment_intent"),
])
def test_an_event_missing_what_its_type_needs_is_rejected_with_the_reason(
        kind: str, obj: dict[str, Any], reason: str) -> None:
    with pytest.raises(Rejected, match=re.escape(reason)):
        interpret(event(kind, obj))
    with pytest.raises(Rejected, match=r"data\.object"):
        interpret({"id": "evt_2", "type": kind, "data": None})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
stripe_objects = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(["pi_1", "ch_1", ""]) | json_values,
    "object": st.sampled_from(["payment_intent", "charge", "checkout.session", "dispute"]),
    "amount": st.integers(-5, 10**12) | json_values,
    "amount_received": st.integers(0, 10**6) | json_values,
    "amount_captured": st.integers(0, 10**6) | json_values,
    "amount_refunded": st.integers(0, 10**6) | json_values,
    "amount_total": st.integers(0, 10**6) | json_values,
    "currency": st.sampled_from(["usd", "jpy", "kwd", "isk", "xyz", "USD"]) | json_values,
    "payment_intent": st.sampled_from(["pi_1", None, {"id": "pi_2"}]) | json_values,
    "charge": st.sampled_from(["ch_1", None]) | json_values,
    "metadata": st.fixed_dictionaries({}, optional={"booking_reference": json_values}),
    "client_reference_id": json_values, "payment_status": json_values, "mode": json_values,
    "last_payment_error": json_values, "latest_charge": json_values, "created": json_values,
})
stripe_events = st.fixed_dictionaries({}, optional={
    "id": st.just("evt_1") | json_values,
    "type": st.sampled_from(["payment_intent.succeeded", "payment_intent.payment_failed",
                             "checkout.session.completed", "charge.refunded",
                             "charge.dispute.created", "plan.created"]) | json_values,
    "data": st.fixed_dictionaries({}, optional={"object": stripe_objects | json_values})
    | json_values,
    "created": json_values,
})


@settings(max_examples=300, deadline=None)
@given(body=stripe_events | json_values)
def test_any_signed_body_is_keyed_or_invalid_and_any_record_interpreted_or_rejected(
        body: Any) -> None:
    raw = json.dumps(body).encode()  # integers past 64 bits too: ingress must refuse them
    try:
        delivery = accept(raw)
    except PayloadInvalid:
        return
    assert delivery.key
    assert delivery.subject
    no_negative_amount_unless_rejected(stripe.interpret, "stripe", delivery, raw)
