"""The Chapa source without I/O, on Chapa's documented payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.config import Settings
from hookline.domain.events import PaymentRefunded, PaymentReported, Rejected
from hookline.log.envelope import Envelope
from hookline.senders import chapa
from hookline.senders.base import PayloadInvalid
from hookline.senders.signatures import InvalidSignature, sign_chapa
from tests.unit.payments import RECEIVED, no_negative_amount_unless_rejected

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "providers"
SECRETS = ("chapa-old-secret-0001", "chapa-new-secret-0001")


def documented(name: str, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / f"chapa_{name}.json").read_text())
    return {**payload, **changes}


def accept(body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    ingress = chapa.ingress(Settings(chapa_secrets=SECRETS))
    assert ingress is not None
    return ingress.accept(sign_chapa(SECRETS[1], raw) if headers is None else headers, raw)


def interpret(payload: dict[str, Any]) -> list[Any]:
    return chapa.interpret(Envelope("chapa:k", "chapa", payload["event"], "s", RECEIVED,
                                    orjson.dumps(payload)))


def test_either_valid_signature_header_is_enough() -> None:
    raw = orjson.dumps(documented("charge.success"))
    signed = sign_chapa(SECRETS[0], raw)
    wrong = sign_chapa("not-the-secret", raw)
    for headers in ({"x-chapa-signature": signed["x-chapa-signature"]},
                    {"chapa-signature": signed["chapa-signature"]},
                    {**wrong, "chapa-signature": signed["chapa-signature"]}):
        assert accept(raw, headers).type == "charge.success"
    for headers in ({}, wrong):
        with pytest.raises(InvalidSignature):
            accept(raw, headers)


def test_the_key_hashes_what_identifies_a_delivery_and_survives_retries() -> None:
    first = accept(documented("charge.success"))
    retried = accept(documented("charge.success", updated_at="2023-08-27T19:31:27.000000Z"))
    refunded = accept(documented("charge.refunded"))
    assert first.key == retried.key != refunded.key
    assert len(first.key) == 64


def test_the_subject_is_the_booking_reference_in_meta_else_tx_ref() -> None:
    assert accept(documented("charge.success")).subject == "4FGFF4FFGD3"
    with_meta = documented("charge.success", meta={"booking_reference": "BK-9"})
    assert accept(with_meta).subject == "BK-9"
    assert accept(documented("payout.success")).subject == "MYMER3434989"


@pytest.mark.parametrize("body", [
    b"{not json", b'"charge.success"', orjson.dumps({"tx_ref": "t", "status": "success"}),
    orjson.dumps({"event": "charge.success", "status": "success"}),
])
def test_a_body_without_event_and_reference_is_invalid(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        accept(body)


def test_no_secret_means_no_chapa_endpoint() -> None:
    assert chapa.ingress(Settings()) is None


def test_documented_success_failure_and_refund_payloads_are_interpreted() -> None:
    [succeeded] = interpret(documented("charge.success"))
    assert succeeded == PaymentReported(
        transaction_id="4FGFF4FFGD3", status="succeeded", amount=Decimal("400.00"),
        currency="ETB", booking_reference=None, provider_reference="AP634JFwEbxd",
        occurred_at=datetime(2023, 8, 27, 19, 21, 18, tzinfo=UTC))
    [failed] = interpret(documented("charge.failed_cancelled"))
    assert (failed.transaction_id, failed.status) == ("4FGFF4FFGD3", "failed")
    for name in ("charge.refunded", "charge.reversed"):
        reported, refunded = interpret(documented("charge.refunded", event=name))
        assert (reported.status, reported.amount) == ("succeeded", None)
        assert refunded == PaymentRefunded("4FGFF4FFGD3", Decimal("400.00"), "ETB",
                                           succeeded.occurred_at, running_total=False)


def test_the_booking_reference_is_only_meta_booking_reference_object_or_json_string() -> None:
    assert interpret(documented("charge.success"))[0].booking_reference is None  # not tx_ref
    for meta in ({"booking_reference": "BK-5"}, '{"booking_reference": "BK-5"}'):
        [reported] = interpret(documented("charge.success", meta=meta))
        assert reported.booking_reference == "BK-5"
        assert accept(documented("charge.success", meta=meta)).subject == "BK-5"
    for meta in ("not json", '["BK-5"]', {"reference": "BK-5"}, '{"booking_reference": 5}'):
        assert interpret(documented("charge.success", meta=meta))[0].booking_reference is None
    assert accept(documented("charge.success")).subject == "4FGFF4FFGD3"  # the payment


def test_two_refunds_of_one_charge_have_two_keys_and_a_retry_the_same() -> None:
    first = accept(documented("charge.refunded", amount="100.00"))
    retried = accept(documented("charge.refunded", amount="100.00"))
    second = accept(documented("charge.refunded", amount="150.00",
                               updated_at="2023-08-28T10:00:00.000000Z"))
    same_amount_later = accept(documented("charge.refunded", amount="100.00",
                                          updated_at="2023-08-29T10:00:00.000000Z"))
    assert first.key == retried.key
    assert len({first.key, second.key, same_amount_later.key}) == 3


def test_payouts_and_unknown_events_are_ignored() -> None:
    assert interpret(documented("payout.success")) == []
    assert interpret(documented("charge.success", event="charge.pending")) == []


@pytest.mark.parametrize(("changes", "reason"), [
    ({"amount": None}, "amount"), ({"amount": "4OO"}, "amount"), ({"amount": "1.005"}, "amount"),
    ({"amount": "-1"}, "amount"), ({"amount": "1e999999"}, "amount"),
    ({"currency": "BIRR"}, "currency"), ({"tx_ref": ""}, "tx_ref"),
])
def test_a_payment_missing_what_it_needs_is_rejected_with_the_reason(
        changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        interpret(documented("charge.success", **changes))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
chapa_payloads = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from(["charge.success", "charge.failed/cancelled", "charge.refunded",
                              "charge.reversed", "payout.success"]) | json_values,
    "tx_ref": st.sampled_from(["BK-1", "", " "]) | json_values,
    "reference": st.sampled_from(["AP1"]) | json_values,
    "status": json_values,
    "amount": st.sampled_from(["400.00", "1e3", "NaN", "-1", "1.234", "0", "1e999999"])
    | json_values,
    "currency": st.sampled_from(["ETB", "usd", "XYZ"]) | json_values,
    "created_at": st.sampled_from(["2023-08-27T19:21:18.000000Z", "yesterday"]) | json_values,
    "meta": st.fixed_dictionaries({}, optional={"booking_reference": json_values})
    | json_values,
})


@settings(max_examples=300, deadline=None)
@given(body=chapa_payloads | json_values)
def test_any_signed_body_is_keyed_or_invalid_and_any_record_interpreted_or_rejected(
        body: Any) -> None:
    raw = json.dumps(body).encode()  # integers past 64 bits too: ingress must refuse them
    try:
        delivery = accept(raw)
    except PayloadInvalid:
        return
    assert len(delivery.key) == 64
    assert delivery.subject
    no_negative_amount_unless_rejected(chapa.interpret, "chapa", delivery, raw)
