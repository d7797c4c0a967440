"""The bookings source (signed, validated, interpreted) and the scheduler's own records."""

from __future__ import annotations

import base64
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from hookline.config import Settings
from hookline.domain.events import (
    BookingCancelled,
    BookingCreated,
    BookingExpired,
    PaymentTimedOut,
    Rejected,
)
from hookline.log.envelope import decode, encode
from hookline.log.publisher import Publisher
from hookline.senders import bookings, deadlines
from hookline.senders.base import PayloadInvalid
from hookline.senders.registry import ingresses
from hookline.senders.signatures import InvalidSignature, sign_standard_webhooks
from hookline.web.ingress import create_app

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
SETTINGS = Settings(bookings_secrets=(SECRET,), transactions_unsigned=True)
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def booking(**changes: Any) -> dict[str, Any]:
    return {"reference": "BK-7", "customer": {"email": "ada@example.com", "name": "Ada"},
            "destination": "Lalibela", "travel_date": "2026-06-01", "return_date": "2026-06-08",
            "travelers": 2, "total_amount": "149.90", "currency": "EUR",
            "created_at": "2026-05-01T12:00:00Z", **changes}


def body(kind: str = "booking.created", **changes: Any) -> bytes:
    return orjson.dumps({"type": kind, "booking": booking(**changes)})


def signed(payload: bytes, msg_id: str = "msg_1") -> dict[str, str]:
    now = int(time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(now),
            "webhook-signature": sign_standard_webhooks(SECRET, msg_id, now, payload)}


def accept(payload: bytes) -> Any:
    ingress = bookings.ingress(SETTINGS)
    assert ingress is not None
    return ingress.accept(signed(payload), payload)


def field_errors(payload: bytes) -> Any:
    with pytest.raises(PayloadInvalid) as caught:
        accept(payload)
    return caught.value.errors


def envelope_of(payload: bytes, kind: str = "booking.created") -> Any:
    return decode(encode("bookings:msg_1", "bookings", kind, "BK-7", NOW, payload))


def test_a_signed_booking_is_keyed_by_webhook_id_about_its_reference() -> None:
    delivery = accept(body())
    assert (delivery.key, delivery.type, delivery.subject) == ("msg_1", "booking.created", "BK-7")


def test_an_unsigned_or_wrongly_signed_booking_is_refused() -> None:
    ingress = bookings.ingress(SETTINGS)
    assert ingress is not None
    with pytest.raises(InvalidSignature):
        ingress.accept({}, body())
    with pytest.raises(InvalidSignature):
        ingress.accept(signed(body(destination="elsewhere")), body())


def test_without_a_secret_there_is_no_bookings_endpoint() -> None:
    assert bookings.ingress(Settings()) is None
    assert "bookings" not in ingresses(Settings(transactions_unsigned=True))
    assert "bookings" in ingresses(SETTINGS)


@pytest.mark.parametrize(("changes", "field"), [
    ({"return_date": "2026-05-30"}, "return_date"),
    ({"travelers": 0}, "travelers"),
    ({"travelers": 1.5}, "travelers"),
    ({"customer": {"email": "not-an-address", "name": "Ada"}}, "customer"),
    ({"total_amount": "-3"}, "total_amount"),
    ({"currency": "EURO"}, "currency"),
    ({"travel_date": "tomorrow"}, "travel_date"),
    ({"reference": ""}, "reference"),
])
def test_an_invalid_booking_names_the_field(changes: dict[str, Any], field: str) -> None:
    assert field in field_errors(body(**changes))["booking"]


def test_a_booking_without_required_fields_lists_each_of_them() -> None:
    errors = field_errors(orjson.dumps({"type": "booking.created", "booking": {}}))["booking"]
    assert {"reference", "customer", "destination", "travel_date", "travelers",
            "total_amount", "currency", "created_at"} <= errors.keys()
    assert "type" in field_errors(orjson.dumps({"booking": {}}))


def test_an_invalid_booking_is_answered_422_with_field_errors() -> None:
    app = create_app(SETTINGS, Publisher(SETTINGS))  # never started: nothing is published
    payload = body(travelers=0, return_date="2026-01-01")
    answer = app.test_client().post("/v1/webhooks/bookings", data=payload,
                                    headers={**signed(payload),
                                             "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json is not None
    assert set(answer.json["fields"]["booking"]) == {"travelers", "return_date"}


def test_a_created_booking_is_interpreted_with_exact_amounts() -> None:
    events = bookings.interpret(envelope_of(b'{"type": "booking.created", "booking": '
                                            + orjson.dumps(booking(total_amount=149.9)) + b"}"))
    assert events == [BookingCreated(
        reference="BK-7", customer_email="ada@example.com", customer_name="Ada",
        destination="Lalibela", travel_date=date(2026, 6, 1), return_date=date(2026, 6, 8),
        travelers=2, total_amount=Decimal("149.9"), currency="EUR", created_at=NOW)]


def test_a_cancellation_needs_only_the_reference() -> None:
    payload = orjson.dumps({"type": "booking.cancelled", "booking": {"reference": "BK-7"}})
    assert accept(payload).subject == "BK-7"
    assert bookings.interpret(envelope_of(payload, "booking.cancelled")) == [
        BookingCancelled("BK-7", None)]


def test_an_unused_booking_event_type_is_recorded_and_ignored() -> None:
    payload = orjson.dumps({"type": "booking.viewed", "booking": {"reference": "BK-7"}})
    assert accept(payload).type == "booking.viewed"
    assert bookings.interpret(envelope_of(payload, "booking.viewed")) == []


def test_a_record_that_no_longer_validates_is_rejected_when_projected() -> None:
    with pytest.raises(Rejected):
        bookings.interpret(envelope_of(body(travelers=0)))


def test_deadline_records_have_the_same_id_whoever_appends_them() -> None:
    first = deadlines.booking_expired("BK-7", NOW, NOW)
    second = deadlines.booking_expired("BK-7", NOW, datetime.now(UTC))
    assert first.id == second.id == "scheduler:booking.expired:BK-7"
    assert deadlines.interpret(decode(first.record)) == [BookingExpired("BK-7")]

    timeout = deadlines.payment_timed_out("chapa", "tx-9", None, NOW, NOW)
    assert timeout.id == "scheduler:payment.timed_out:chapa:tx-9"
    record = decode(timeout.record)
    assert (record.source, record.type, record.subject) == ("scheduler", "payment.timed_out",
                                                            "tx-9")
    assert deadlines.interpret(record) == [PaymentTimedOut("tx-9", "chapa")]
    written_before = encode("scheduler:payment.timed_out:tx-9", "scheduler",
                            "payment.timed_out", "tx-9", NOW, b'{"transaction_id": "tx-9"}')
    assert deadlines.interpret(decode(written_before)) == [PaymentTimedOut("tx-9")]


def test_deadline_records_cannot_be_posted_from_outside() -> None:
    assert deadlines.ingress(SETTINGS) is None
    assert "scheduler" not in ingresses(SETTINGS)
    with pytest.raises(Rejected):
        deadlines.interpret(decode(encode("scheduler:x", "scheduler", "booking.expired", "x",
                                          NOW, b"{}")))


@pytest.mark.parametrize(("payload", "reason"), [
    (b"[]", "booking.expired: expected an object"),
    (b'{"reference": 5}', "booking.expired.reference: expected a non-empty string"),
])
def test_a_malformed_deadline_record_is_rejected_naming_the_field(payload: bytes,
                                                                  reason: str) -> None:
    record = encode("scheduler:x", "scheduler", "booking.expired", "x", NOW, payload)
    with pytest.raises(Rejected, match=f"^{reason}$"):
        deadlines.interpret(decode(record))
