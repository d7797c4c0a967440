"""The transactions source at ingress: what a valid body is, field by field, amounts exact."""

from __future__ import annotations

import base64
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.config import Settings, SettingsError, load_settings
from hookline.senders.base import PayloadInvalid
from hookline.senders.signatures import InvalidSignature, sign_standard_webhooks
from hookline.senders.transactions import TransactionsIngress, load

SECRET = "whsec_" + base64.b64encode(b"unit-test-transactions-secret-32").decode()


def body(**changes: Any) -> dict[str, Any]:
    valid: dict[str, Any] = {"transaction_id": "tx-1", "source_account": "acct-a",
                             "destination_account": "acct-b", "amount": "149.90",
                             "currency": "EUR"}
    valid.update(changes)
    return {k: v for k, v in valid.items() if v is not _DROP}


_DROP = object()


def raw(data: Any) -> bytes:
    return orjson.dumps(data)


def field_errors(payload: bytes) -> dict[str, Any]:
    with pytest.raises(PayloadInvalid) as raised:
        load(payload)
    return dict(raised.value.errors)


def test_a_minimal_transaction_is_valid() -> None:
    data = load(raw(body()))
    assert data["transaction_id"] == "tx-1"
    assert data["amount"] == Decimal("149.90")
    assert (data["currency"], data["status"], data["booking_reference"]) == ("EUR", None, None)


def test_optional_fields_and_unknown_fields_are_kept() -> None:
    data = load(raw(body(booking_reference="BK-1", status="failed",
                         failure_reason="card declined", note={"any": "thing"})))
    assert (data["booking_reference"], data["status"]) == ("BK-1", "failed")
    assert data["failure_reason"] == "card declined"
    assert data["note"] == {"any": "thing"}


@pytest.mark.parametrize(("literal", "exact"), [
    (b"0.1", Decimal("0.1")),
    (b"123456789012345.1234", Decimal("123456789012345.1234")),
    (b"999999999999999", Decimal("999999999999999")),
    (b"7", Decimal("7")),
    (b"1e2", Decimal("100")),
    (b'"0.1"', Decimal("0.1")),
    (b'"999999999999999.9999"', Decimal("999999999999999.9999")),
])
def test_amounts_are_read_exactly_never_through_a_float(literal: bytes, exact: Decimal) -> None:
    payload = raw(body(amount=0)).replace(b'"amount":0', b'"amount":' + literal)
    amount = load(payload)["amount"]
    assert isinstance(amount, Decimal)
    assert amount == exact
    assert str(amount) == str(exact) or amount.normalize() == exact.normalize()


@pytest.mark.parametrize("literal", [b"1000000000000000", b"1e15",
                                     b'"123456789012345678901234567890"'])
def test_amounts_from_a_thousand_trillion_up_are_refused(literal: bytes) -> None:
    payload = raw(body(amount=0)).replace(b'"amount":0', b'"amount":' + literal)
    with pytest.raises(PayloadInvalid) as refused:
        load(payload)
    assert "amount" in refused.value.errors


@pytest.mark.parametrize(("changes", "field"), [
    ({"transaction_id": ""}, "transaction_id"),
    ({"transaction_id": "x" * 129}, "transaction_id"),
    ({"transaction_id": "é" * 100}, "transaction_id"),  # 200 bytes: over the id's byte bound
    ({"transaction_id": 12}, "transaction_id"),
    ({"transaction_id": None}, "transaction_id"),
    ({"source_account": ""}, "source_account"),
    ({"destination_account": "y" * 129}, "destination_account"),
    ({"amount": -5}, "amount"),
    ({"amount": "-5.00"}, "amount"),
    ({"amount": 0}, "amount"),
    ({"amount": "0.0000"}, "amount"),
    ({"amount": "1.00001"}, "amount"),
    ({"amount": "abc"}, "amount"),
    ({"amount": "1.2.3"}, "amount"),
    ({"amount": "NaN"}, "amount"),
    ({"amount": "Infinity"}, "amount"),
    ({"amount": "1_000"}, "amount"),
    ({"amount": " 5 "}, "amount"),
    ({"amount": "+5"}, "amount"),
    ({"amount": "1e400"}, "amount"),
    ({"amount": "\u0661\u0662"}, "amount"),  # Arabic-Indic digits
    ({"amount": "0x10"}, "amount"),
    ({"amount": ""}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": None}, "amount"),
    ({"amount": [1]}, "amount"),
    ({"amount": {"value": 1}}, "amount"),
    ({"currency": "usd"}, "currency"),
    ({"currency": "EURO"}, "currency"),
    ({"currency": "XXX"}, "currency"),
    ({"currency": 978}, "currency"),
    ({"status": "refunded"}, "status"),
    ({"booking_reference": ""}, "booking_reference"),
    ({"failure_reason": "r" * 1001}, "failure_reason"),
])
def test_each_invalid_field_is_reported_under_its_name(changes: dict[str, Any],
                                                        field: str) -> None:
    errors = field_errors(raw(body(**changes)))
    assert list(errors) == [field]
    assert errors[field]


@pytest.mark.parametrize("literal", [b"-5", b"0", b"0.00001", b"1.23456", b"true", b"-0.0"])
def test_invalid_amount_literals_are_field_errors(literal: bytes) -> None:
    payload = raw(body(amount=0)).replace(b'"amount":0', b'"amount":' + literal)
    assert list(field_errors(payload)) == ["amount"]


@pytest.mark.parametrize("missing", ["transaction_id", "source_account", "destination_account",
                                     "amount", "currency"])
def test_each_missing_field_is_reported(missing: str) -> None:
    errors = field_errors(raw(body(**{missing: _DROP})))
    assert errors == {missing: ["Missing data for required field."]}


def test_every_problem_is_reported_at_once() -> None:
    errors = field_errors(raw({"amount": "-1", "currency": "eur"}))
    assert set(errors) == {"transaction_id", "source_account", "destination_account",
                           "amount", "currency"}


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"{", b'{"a": NaN}', b"\xff\xfe{}", b'{"a": "\\u0000"}',
    b"[" * 2000 + b"]" * 2000,
])
def test_unparseable_bodies_are_invalid(payload: bytes) -> None:
    with pytest.raises(PayloadInvalid, match=r"JSON|u0000|deep"):
        load(payload)


@pytest.mark.parametrize("payload", [b"[]", b'"tx"', b"12", b"null", b"true"])
def test_a_body_that_is_not_an_object_is_invalid(payload: bytes) -> None:
    assert field_errors(payload) == {"_schema": ["Expected a JSON object."]}


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("999999999999999.9999"),
                   places=4,
                   allow_nan=False, allow_infinity=False))
def test_any_positive_amount_with_four_places_below_the_limit_is_exact(amount: Decimal) -> None:
    for literal in (str(amount).encode(), b'"' + str(amount).encode() + b'"'):
        payload = raw(body(amount=0)).replace(b'"amount":0', b'"amount":' + literal)
        assert load(payload)["amount"] == amount


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.builds(orjson.dumps, st.dictionaries(
    st.sampled_from(["transaction_id", "amount", "currency", "source_account", "x"]),
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False), max_size=5)))
def test_load_raises_only_payload_invalid(payload: bytes) -> None:
    try:
        data = load(payload)
    except PayloadInvalid:
        return
    assert isinstance(data["amount"], Decimal)


def signed(payload: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    return {"webhook-id": "msg_1", "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_standard_webhooks(secret, "msg_1", timestamp, payload)}


def test_the_delivery_is_keyed_by_transaction_and_status() -> None:
    ingress = TransactionsIngress(Settings(transactions_secrets=(SECRET,)))
    payload = raw(body(booking_reference="BK-9"))
    plain = ingress.accept(signed(payload), payload)
    assert (plain.key, plain.type, plain.subject) == ("tx-1", "transaction.succeeded", "BK-9")
    assert plain.trusted
    payload = raw(body(status="failed"))
    failed = ingress.accept(signed(payload), payload)
    assert (failed.key, failed.type, failed.subject) == ("tx-1:failed", "transaction.failed",
                                                         "tx-1")


def test_without_a_secret_ingress_refuses_to_start_unless_unsigned_is_allowed() -> None:
    with pytest.raises(SettingsError, match="HOOKLINE_TRANSACTIONS_SECRETS is not set"):
        TransactionsIngress(Settings())
    with pytest.raises(SettingsError, match="HOOKLINE_TRANSACTIONS_UNSIGNED"):
        load_settings({"HOOKLINE_TRANSACTIONS_UNSIGNED": "yes"})
    allowed = load_settings({"HOOKLINE_TRANSACTIONS_UNSIGNED": "allow"})
    delivery = TransactionsIngress(allowed).accept({}, raw(body()))
    assert (delivery.key, delivery.trusted) == ("tx-1", False)  # kept, never trusted


def test_with_a_secret_only_signed_deliveries_are_accepted() -> None:
    other = "whsec_" + base64.b64encode(b"the-previous-secret-rotated-out!").decode()
    ingress = TransactionsIngress(Settings(transactions_secrets=(SECRET, other)))
    payload = raw(body())
    assert ingress.accept(signed(payload), payload).key == "tx-1"
    assert ingress.accept(signed(payload, other), payload).key == "tx-1"
    with pytest.raises(InvalidSignature, match="missing"):
        ingress.accept({}, payload)
    with pytest.raises(InvalidSignature, match="tolerance"):
        ingress.accept(signed(payload, at=int(time.time()) - 3600), payload)
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        ingress.accept(signed(payload), payload.replace(b"149.90", b"149.91"))


def test_the_signature_is_checked_before_the_body() -> None:
    ingress = TransactionsIngress(Settings(transactions_secrets=(SECRET,)))
    with pytest.raises(InvalidSignature):
        ingress.accept({}, b"not json")


def test_a_signed_invalid_delivery_is_kept_and_rejected_naming_the_field() -> None:
    from datetime import UTC, datetime

    from hookline.domain.events import Rejected
    from hookline.log.envelope import decode, encode
    from hookline.senders.transactions import INVALID, interpret

    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    ingress = TransactionsIngress(Settings(transactions_secrets=(secret,)))
    raw = orjson.dumps(body(currency="EURO"))
    now = int(time.time())
    headers = {"webhook-id": "msg_7", "webhook-timestamp": str(now),
               "webhook-signature": sign_standard_webhooks(secret, "msg_7", now, raw)}
    delivery = ingress.accept(headers, raw)
    assert (delivery.key, delivery.type) == ("invalid:msg_7", INVALID)

    record = decode(encode("transactions:invalid:msg_7", "transactions", delivery.type,
                           delivery.subject, datetime.now(UTC), raw))
    with pytest.raises(Rejected, match="currency"):
        interpret(record)


@pytest.mark.parametrize(("amount", "reads"), [(b'"149.90"', ["parse"]),
                                               (b"149.90", ["parse", "parse_exact"])])
def test_a_signed_delivery_is_parsed_once_unless_its_amount_must_be_read_exactly(
        amount: bytes, reads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from hookline.log import payloads

    parses: list[str] = []

    def counted(name: str) -> Any:
        original = getattr(payloads, name)

        def parse(raw: bytes) -> Any:
            parses.append(name)
            return original(raw)
        return parse

    for name in ("parse", "parse_exact"):
        monkeypatch.setattr(payloads, name, counted(name))
    ingress = TransactionsIngress(Settings(transactions_secrets=(SECRET,)))
    valid = raw(body()).replace(b'"149.90"', amount)
    for payload in (valid, valid.replace(b'"EUR"', b'"EURO"')):  # kept as invalid, too
        parses.clear()
        ingress.accept(signed(payload), payload)
        assert parses == reads
