"""The envelope keeps the payload byte for byte and refuses what is not a record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.log.envelope import Envelope, decode, encode, envelope_id

RECEIVED = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)

# orjson refuses lone surrogates, which are not text anyway
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text | st.just("payload"), children, max_size=4),
    max_leaves=25,
)
layouts = st.sampled_from([0, orjson.OPT_INDENT_2, orjson.OPT_SORT_KEYS])
padding = st.text(" \t\r\n", max_size=3).map(str.encode)


def envelope(raw: bytes, **header: Any) -> Envelope:
    fields = {"id": "transactions:tx-1", "source": "transactions", "type": "transaction.succeeded",
              "subject": "BK-1", "received_at": RECEIVED, **header}
    return decode(encode(raw_payload=raw, **fields))


@pytest.mark.parametrize("raw", [
    b'{"amount":0.1,"currency":"EUR"}',
    b'{ "amount" : 12345678901234567890.1234 ,\n  "note": "caf\xc3\xa9 \xe2\x82\xac \\u00e9" }',
    b'{"payload":{"payload":{"payload":"payload"}},"x":",\\"payload\\":"}',
    b'  [1, 2.50, 3e2]  \n',
    b'"just a string"',
    b'{}',
])
def test_the_payload_survives_a_round_trip_byte_for_byte(raw: bytes) -> None:
    decoded = envelope(raw)
    assert decoded.raw_payload == raw
    assert decoded.payload() == orjson.loads(raw)


def test_the_header_survives_a_round_trip() -> None:
    decoded = envelope(b"{}", id='a:"quoted" ,"payload": id', subject="ünïcødé ✓")
    assert decoded.id == 'a:"quoted" ,"payload": id'
    assert decoded.subject == "ünïcødé ✓"
    assert (decoded.source, decoded.type) == ("transactions", "transaction.succeeded")
    assert decoded.received_at == RECEIVED


def test_received_at_is_written_in_utc_with_z() -> None:
    body = encode("s:1", "s", "t", "x", RECEIVED, b"{}")
    assert b'"received_at":"2024-05-17T09:30:15.123456Z"' in body
    other_zone = RECEIVED.astimezone(timezone(timedelta(hours=3)))
    assert decode(encode("s:1", "s", "t", "x", other_zone, b"{}")).received_at == RECEIVED


def test_exact_payload_reads_numbers_as_decimals_never_floats() -> None:
    decoded = envelope(b'{"amount": 0.1, "big": 12345678901234567890.1234, "n": 3}')
    exact = decoded.exact_payload()
    assert exact["amount"] == Decimal("0.1")
    assert exact["big"] == Decimal("12345678901234567890.1234")
    assert exact["n"] == 3
    assert not any(isinstance(value, float) for value in exact.values())


def test_an_encoded_envelope_is_one_json_object() -> None:
    body = encode("s:1", "s", "t", "x", RECEIVED, b'{"a": [1, 2]}')
    assert orjson.loads(body) == {"id": "s:1", "source": "s", "type": "t", "subject": "x",
                                  "received_at": "2024-05-17T09:30:15.123456Z",
                                  "payload": {"a": [1, 2]}}


@pytest.mark.parametrize("body", [
    b"",
    b"garbage",
    b"{}",
    b'{"payload":{}}',
    b'{"id":"a","payload":{}}',
    b'{"id":"a","source":"s","type":"t","subject":"x","payload":{}}',
    b'{"id":1,"source":"s","type":"t","subject":"x","received_at":"2024-01-01T00:00:00Z",'
    b'"payload":{}}',
    b'{"id":"a","source":"s","type":"t","subject":"x","received_at":"yesterday",'
    b'"payload":{}}',
    b'{"id":"a","source":"s","type":"t","subject":"x","received_at":5,"payload":{}}',
    b'["id","source"],"payload":{}}',
    pytest.param(
        b'{"id":"a","source":"s","type":"t","subject":"x","received_at":"2024-01-01T00:00:00Z",'
        b'"payload":{}', id="truncated-payload"),
    b'\xff\xfe,"payload":}',
])
def test_decode_rejects_what_is_not_a_record(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"not an envelope|isoformat"):
        decode(body)


@settings(max_examples=300, deadline=None)
@given(payload=json_values, layout=layouts, before=padding, after=padding,
       id=text, subject=text, type=text)
def test_any_json_payload_and_header_round_trip(payload: Any, layout: int, before: bytes,
                                                after: bytes, id: str, subject: str,
                                                type: str) -> None:
    raw = before + orjson.dumps(payload, option=layout) + after
    decoded = envelope(raw, id=id, subject=subject, type=type)
    assert decoded.raw_payload == raw
    assert (decoded.id, decoded.subject, decoded.type) == (id, subject, type)
    assert decoded.payload() == orjson.loads(raw)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | st.builds(
    lambda a, b: a + b',"payload":' + b, st.binary(max_size=80), st.binary(max_size=80)))
def test_decode_of_arbitrary_bytes_raises_only_value_error(body: bytes) -> None:
    try:
        decoded = decode(body)
    except ValueError:
        return
    assert all(isinstance(v, str) for v in (decoded.id, decoded.source, decoded.type))
    assert isinstance(decoded.received_at, datetime)


def test_an_unverified_sender_is_marked_and_the_mark_survives_a_round_trip() -> None:
    assert envelope(b"{}", trusted=False).trusted is False
    assert b'"trusted":false' in encode("s:1", "s", "t", "x", RECEIVED, b"{}", trusted=False)


def test_a_record_without_the_mark_is_trusted_as_records_written_before_it_were() -> None:
    body = encode("s:1", "s", "t", "x", RECEIVED, b"{}")
    assert b"trusted" not in body
    assert decode(body).trusted is True


def test_a_mark_that_is_not_a_boolean_is_not_a_record() -> None:
    body = b'{"id":"s:1","source":"s","type":"t","subject":"x",' \
           b'"received_at":"2024-05-17T09:30:15Z","trusted":"no","payload":{}}'
    with pytest.raises(ValueError, match="not an envelope"):
        decode(body)


def test_an_envelope_id_is_the_source_and_its_key() -> None:
    assert envelope_id("stripe", "evt_1") == "stripe:evt_1"
    assert envelope_id("scheduler", "booking.expired:BK-1") == "scheduler:booking.expired:BK-1"
