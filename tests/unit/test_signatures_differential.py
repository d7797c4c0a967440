"""Differential tests: hookline's verifiers against the providers' own SDK code.

The SDKs are the oracle on well-formed input. Where hookline is deliberately stricter, the
expected outcome is spelled out: non-canonical headers (which the SDKs parse leniently, e.g.
`t=+123`, junk after a matching signature) are rejected, and Stripe timestamps too far in the
future are rejected (the Stripe SDK only checks the past).
"""

from __future__ import annotations

import base64
import re
import string
import time
from dataclasses import dataclass
from typing import TypeVar

import standardwebhooks
import stripe
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ingest.signatures import (
    InvalidSignature,
    StandardWebhooksVerifier,
    StripeVerifier,
    sign_standard_webhooks,
    sign_stripe,
)

T = TypeVar("T")

TOLERANCE = 300
# Keep clear of the tolerance edge: the SDKs read the clock a moment after hookline does.
CLOCK_MARGIN = 5
CANONICAL_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")
STRICT_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
LOWER_HEX_64 = re.compile(r"[0-9a-f]{64}")
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))


def mostly(
    usual: st.SearchStrategy[T], rare: st.SearchStrategy[T], odds: int = 10
) -> st.SearchStrategy[T]:
    """`rare` once in `odds` draws, so that both verdicts stay common in the generated cases."""
    return st.integers(1, odds).flatmap(lambda roll: rare if roll == 1 else usual)


fresh = st.integers(-TOLERANCE + CLOCK_MARGIN, TOLERANCE - CLOCK_MARGIN)
old = st.integers(-(10**6), -TOLERANCE - CLOCK_MARGIN)
future = st.integers(TOLERANCE + CLOCK_MARGIN, 10**6)
offsets = mostly(fresh, old | future, odds=3)
bodies = st.text(max_size=120).map(str.encode)
junk = st.text(max_size=12)


def timestamp_text(draw: st.DrawFn, timestamp: int) -> str:
    canonical = str(timestamp)
    lenient = ["+" + canonical, "0" + canonical, canonical + ".0", " " + canonical]
    return draw(mostly(st.just(canonical), st.sampled_from(lenient) | junk, odds=20))


def signed_body(draw: st.DrawFn, body: bytes) -> bytes:
    return draw(mostly(st.just(body), st.sampled_from([body + b" ", b"{}"])))


# --- Standard Webhooks ----------------------------------------------------------------------


@dataclass(frozen=True)
class StandardCase:
    secret: str
    headers: dict[str, str]
    body: bytes


@st.composite
def standard_cases(draw: st.DrawFn) -> StandardCase:
    secret = "whsec_" + base64.b64encode(draw(st.binary(min_size=1, max_size=48))).decode()
    other = "whsec_" + base64.b64encode(draw(st.binary(min_size=1, max_size=48))).decode()
    msg_id = draw(mostly(st.text(VISIBLE, min_size=1, max_size=30), junk, odds=20))
    timestamp = int(time.time()) + draw(offsets)
    body = draw(bodies)
    good = sign_standard_webhooks(secret, msg_id, timestamp, signed_body(draw, body))
    entries = draw(st.lists(standard_entry(good, other, msg_id, timestamp), min_size=1, max_size=2))
    separator = draw(mostly(st.just(" "), st.sampled_from(["  ", ", "]), odds=20))
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp_text(draw, timestamp),
        "webhook-signature": separator.join(entries),
    }
    dropped = draw(mostly(st.none(), st.sampled_from(list(headers)), odds=20))
    return StandardCase(secret, {k: v for k, v in headers.items() if k != dropped}, body)


def standard_entry(good: str, other: str, msg_id: str, timestamp: int) -> st.SearchStrategy[str]:
    encoded = good.removeprefix("v1,")
    well_formed = st.sampled_from(
        [
            good,
            good,
            good,
            sign_standard_webhooks(other, msg_id, timestamp, b"x"),
            "v1a," + encoded,
            "v2," + encoded,
            "v1," + encoded[:-2] + "A=",  # may differ only in bits base64 ignores
        ]
    )
    random_v1 = st.binary(max_size=33).map(lambda raw: "v1," + base64.b64encode(raw).decode())
    malformed = st.sampled_from(
        ["v1," + encoded.rstrip("="), "v1,!" + encoded, good + ",x", "v1", "v1,"]
    )
    return mostly(mostly(well_formed, random_v1), malformed | junk, odds=20)


def standard_is_canonical(headers: dict[str, str]) -> bool:
    names = ("webhook-id", "webhook-timestamp", "webhook-signature")
    if not all(headers.get(name) for name in names):
        return False
    return (
        bool(VISIBLE_ASCII.fullmatch(headers["webhook-id"]))
        and bool(CANONICAL_TIMESTAMP.fullmatch(headers["webhook-timestamp"]))
        and all(map(standard_entry_is_canonical, headers["webhook-signature"].split(" ")))
    )


def standard_entry_is_canonical(entry: str) -> bool:
    version, comma, signature = entry.partition(",")
    if not (entry.isascii() and version and comma and signature) or "," in signature:
        return False
    return version != "v1" or bool(STRICT_BASE64.fullmatch(signature))


def standard_reference_accepts(case: StandardCase) -> bool:
    try:
        webhook = standardwebhooks.Webhook(case.secret)
        webhook.verify(case.body, case.headers, json_parse=False)
    except (standardwebhooks.webhooks.WebhookVerificationError, ValueError):
        return False  # the library lets ValueError escape on some malformed headers
    return True


def hookline_standard_accepts(case: StandardCase) -> bool:
    try:
        StandardWebhooksVerifier([case.secret], TOLERANCE).verify(case.headers, case.body)
    except InvalidSignature:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(case=standard_cases())
def test_standard_webhooks_matches_reference_library_on_canonical_headers(
    case: StandardCase,
) -> None:
    reference = standard_reference_accepts(case)
    canonical = standard_is_canonical(case.headers)
    event(f"reference accepts={reference}, canonical={canonical}")
    assert hookline_standard_accepts(case) == (reference and canonical)


def test_standard_webhooks_reference_accepts_what_hookline_signs() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign_standard_webhooks(secret, "msg_1", now, b"{}"),
    }
    case = StandardCase(secret, headers, b"{}")
    assert standard_reference_accepts(case)
    assert hookline_standard_accepts(case)


def test_standard_webhooks_lenient_timestamp_is_where_hookline_is_stricter() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": f"{now}.0",
        "webhook-signature": sign_standard_webhooks(secret, "msg_1", now, b"{}"),
    }
    case = StandardCase(secret, headers, b"{}")
    assert standard_reference_accepts(case)
    assert not hookline_standard_accepts(case)


# --- Stripe --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StripeCase:
    secret: str
    header: str
    body: bytes
    timestamp: int


@st.composite
def stripe_cases(draw: st.DrawFn) -> StripeCase:
    alphabet = string.ascii_letters + string.digits
    secret = "whsec_" + draw(st.text(alphabet, min_size=1, max_size=40))
    other = "whsec_" + draw(st.text(alphabet, min_size=1, max_size=40))
    timestamp = int(time.time()) + draw(offsets)
    body = draw(bodies)
    signed = signed_body(draw, body)
    good = stripe_v1(secret, timestamp, signed)
    wrong = stripe_v1(other, timestamp, signed)
    stale = stripe_v1(secret, timestamp - 1, signed)
    items = draw(st.lists(stripe_item(good, wrong, stale), min_size=1, max_size=3))
    stamp_count = draw(mostly(st.just(1), st.sampled_from([0, 2])))
    items += ["t=" + timestamp_text(draw, timestamp) for _ in range(stamp_count)]
    ordered = draw(st.permutations(items))
    return StripeCase(secret, ",".join(ordered), body, timestamp)


def stripe_v1(secret: str, timestamp: int, body: bytes) -> str:
    return sign_stripe(secret, timestamp, body).partition(",v1=")[2]


def stripe_item(good: str, wrong: str, stale: str) -> st.SearchStrategy[str]:
    well_formed = st.sampled_from(
        ["v1=" + good, "v1=" + good, "v1=" + good, "v1=" + wrong, "v1=" + stale, "v0=" + good]
    )
    malformed = st.sampled_from(
        ["v1=" + good.upper(), "v1=" + good + "=x", "v1=" + good[:-1], "v1", " v1=" + good]
    )
    return mostly(well_formed, malformed | junk)


def stripe_is_canonical(header: str) -> bool:
    items = [item.partition("=") for item in header.split(",")]
    if not header.isascii() or not all(key and sep for key, sep, _ in items):
        return False
    stamps = [value for key, _, value in items if key == "t"]
    signatures = [value for key, _, value in items if key == "v1"]
    return (
        len(stamps) == 1
        and bool(CANONICAL_TIMESTAMP.fullmatch(stamps[0]))
        and all(LOWER_HEX_64.fullmatch(signature) for signature in signatures)
    )


def stripe_reference_accepts(case: StripeCase) -> bool:
    try:
        stripe.WebhookSignature.verify_header(case.body, case.header, case.secret, TOLERANCE)
    except stripe.SignatureVerificationError:
        return False
    return True


def hookline_stripe_accepts(case: StripeCase) -> bool:
    try:
        StripeVerifier([case.secret], TOLERANCE).verify(case.header, case.body)
    except InvalidSignature:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(case=stripe_cases())
def test_stripe_matches_stripe_sdk_on_canonical_headers(case: StripeCase) -> None:
    reference = stripe_reference_accepts(case)
    canonical = stripe_is_canonical(case.header)
    too_new = case.timestamp > time.time() + TOLERANCE
    event(f"SDK accepts={reference}, canonical={canonical}, too new={too_new}")
    assert hookline_stripe_accepts(case) == (reference and canonical and not too_new)


def test_stripe_sdk_accepts_what_sign_stripe_produces() -> None:
    secret = "whsec_roundtrip"
    now = int(time.time())
    case = StripeCase(secret, sign_stripe(secret, now, b'{"id":"evt_1"}'), b'{"id":"evt_1"}', now)
    assert stripe_reference_accepts(case)
    assert hookline_stripe_accepts(case)


def test_stripe_future_timestamp_is_where_hookline_is_stricter_than_the_sdk() -> None:
    secret = "whsec_future"
    future_timestamp = int(time.time()) + 3600
    header = sign_stripe(secret, future_timestamp, b"{}")
    case = StripeCase(secret, header, b"{}", future_timestamp)
    assert stripe_reference_accepts(case)
    assert not hookline_stripe_accepts(case)
