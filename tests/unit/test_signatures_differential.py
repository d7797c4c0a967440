"""Differential tests: hookline's verifiers against the reference libraries, on the same
generated headers and bodies: `standardwebhooks` and `svix` for Standard Webhooks, stripe-python
for Stripe. On canonical input, hookline accepts exactly what the reference accepts. Elsewhere
hookline never accepts what the reference refuses, except where it is knowingly more lenient.

Where hookline is deliberately stricter (the input is not canonical):
- timestamps must be plain decimal digits (`t=+123`, `0123`, `123.0`, ` 123` are refused;
  the libraries parse them with int()/float()), and Stripe's header must hold exactly one `t`
  (stripe-python takes the first);
- a `webhook-id` must be visible ASCII (it becomes the record's key; the libraries take any
  non-empty text);
- a Stripe timestamp more than the tolerance in the future is refused (stripe-python only
  checks the past);
- a Stripe header must be ASCII (stripe-python raises TypeError on a non-ASCII `v1` value it
  compares, and accepts one placed after a matching signature).
Where hookline is deliberately more lenient:
- a Standard Webhooks signature list is split on any ASCII whitespace, the libraries split on
  single spaces only (a tab-separated list is refused by them);
- `svix-*` headers are read as the svix library reads them (before `webhook-*`); the
  standardwebhooks library ignores them, so the two libraries are each compared on the header
  names they know.
`v1a` (ed25519) entries are verified by neither library: they are checked against published
vectors and the `cryptography` signer in test_signatures.py.
"""

from __future__ import annotations

import base64
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import pytest
import standardwebhooks
import stripe
import svix
import svix.webhooks
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hookline.senders.signatures import (
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

FIELDS = ("id", "timestamp", "signature")
SEPARATORS = [" ", " ", " ", " ", "  ", ", ", "\t", " \n "]
NON_SPACE_WHITESPACE = re.compile(r"[\t\r\n\f\v]")


@dataclass(frozen=True)
class StandardCase:
    secret: str
    headers: dict[str, str]
    body: bytes


@st.composite
def standard_values(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """A secret, the three header values by field (one may be missing), and the body."""
    secret = "whsec_" + base64.b64encode(draw(st.binary(min_size=1, max_size=48))).decode()
    other = "whsec_" + base64.b64encode(draw(st.binary(min_size=1, max_size=48))).decode()
    msg_id = draw(mostly(st.text(VISIBLE, min_size=1, max_size=30), junk, odds=20))
    timestamp = int(time.time()) + draw(offsets)
    body = draw(bodies)
    good = sign_standard_webhooks(secret, msg_id, timestamp, signed_body(draw, body))
    entries = draw(st.lists(standard_entry(good, other, msg_id, timestamp), min_size=1, max_size=3))
    separator = draw(st.sampled_from(SEPARATORS))
    values = {"id": msg_id, "timestamp": timestamp_text(draw, timestamp),
              "signature": separator.join(entries)}
    dropped = draw(mostly(st.none(), st.sampled_from(FIELDS), odds=20))
    return secret, {k: v for k, v in values.items() if k != dropped}, body


@st.composite
def standard_cases(draw: st.DrawFn) -> StandardCase:
    """Headers under the `webhook-*` names, which every library reads."""
    secret, values, body = draw(standard_values())
    return StandardCase(secret, {f"webhook-{k}": v for k, v in values.items()}, body)


@st.composite
def svix_cases(draw: st.DrawFn) -> StandardCase:
    """Each header under `svix-*`, `webhook-*` or both (the other name with other values)."""
    secret, values, body = draw(standard_values())
    _, decoys, _ = draw(standard_values())
    headers: dict[str, str] = {}
    for field, value in values.items():
        naming = draw(st.sampled_from(["webhook", "svix", "svix", "both"]))
        headers[f"{'webhook' if naming == 'webhook' else 'svix'}-{field}"] = value
        if naming == "both" and field in decoys:
            headers[f"webhook-{field}"] = draw(st.sampled_from([decoys[field], value]))
    return StandardCase(secret, headers, body)


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
        ["v1," + encoded.rstrip("="), "v1,!" + encoded, good + ",x", "v1", "v1,", "v1 ,"]
    )
    return mostly(mostly(well_formed, random_v1), malformed | junk, odds=20)


def as_read(headers: dict[str, str]) -> dict[str, str]:
    """The header values the svix library reads: svix-* when present, else webhook-*."""
    read = {}
    for field in FIELDS:
        value = headers.get(f"svix-{field}", headers.get(f"webhook-{field}"))
        if value is not None:
            read[f"webhook-{field}"] = value
    return read


def standard_is_canonical(headers: dict[str, str]) -> bool:
    """Within what hookline deliberately takes: a visible-ASCII id, plain digits for the
    timestamp, and single spaces (or none) between signatures."""
    read = as_read(headers)
    if not all(read.get(f"webhook-{field}") for field in FIELDS):
        return True  # a missing header is refused by all: nothing to except
    return (bool(VISIBLE_ASCII.fullmatch(read["webhook-id"]))
            and bool(CANONICAL_TIMESTAMP.fullmatch(read["webhook-timestamp"]))
            and not NON_SPACE_WHITESPACE.search(read["webhook-signature"]))


def spaced(case: StandardCase) -> StandardCase:
    """The case with any whitespace in the signature lists made one space, as hookline reads."""
    headers = {name: re.sub(r"[ \t\r\n\f\v]+", " ", value) if name.endswith("-signature")
               else value for name, value in case.headers.items()}
    return StandardCase(case.secret, headers, case.body)


def standard_reference_accepts(case: StandardCase) -> bool:
    try:
        webhook = standardwebhooks.Webhook(case.secret)
        webhook.verify(case.body, case.headers, json_parse=False)
    except (standardwebhooks.webhooks.WebhookVerificationError, ValueError):
        return False  # the library lets ValueError escape on some malformed headers
    return True


def svix_accepts(case: StandardCase) -> bool:
    try:
        svix.Webhook(case.secret).verify(case.body, case.headers)
    except (svix.webhooks.WebhookVerificationError, ValueError):
        return False
    return True


def hookline_standard_accepts(case: StandardCase) -> bool:
    try:
        StandardWebhooksVerifier([case.secret], TOLERANCE).verify(case.headers, case.body)
    except InvalidSignature:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(case=standard_cases())
def test_standard_webhooks_matches_the_standardwebhooks_library(case: StandardCase) -> None:
    hookline = hookline_standard_accepts(case)
    reference = standard_reference_accepts(case)
    canonical = standard_is_canonical(case.headers)
    event(f"reference accepts={reference}, canonical={canonical}")
    if canonical:
        assert hookline == reference
    if hookline:
        assert standard_reference_accepts(spaced(case))


@settings(max_examples=600, deadline=None)
@given(case=svix_cases())
def test_standard_webhooks_matches_the_svix_library_on_either_header_names(
    case: StandardCase,
) -> None:
    hookline = hookline_standard_accepts(case)
    reference = svix_accepts(case)
    canonical = standard_is_canonical(case.headers)
    event(f"svix accepts={reference}, canonical={canonical}")
    if canonical:
        assert hookline == reference
    if hookline:
        assert svix_accepts(spaced(case))


@pytest.mark.parametrize("accepts", [standard_reference_accepts, svix_accepts])
def test_the_reference_libraries_accept_what_hookline_signs(
        accepts: Callable[[StandardCase], bool]) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign_standard_webhooks(secret, "msg_1", now, b"{}"),
    }
    case = StandardCase(secret, headers, b"{}")
    assert accepts(case)
    assert hookline_standard_accepts(case)


def test_hookline_accepts_what_the_svix_library_signs_under_svix_names() -> None:
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    now = datetime.now(UTC)
    signature = svix.Webhook(secret).sign("msg_svix", now, "{}")
    headers = {"svix-id": "msg_svix", "svix-timestamp": str(int(now.timestamp())),
               "svix-signature": signature}
    case = StandardCase(secret, headers, b"{}")
    assert svix_accepts(case)
    assert not standard_reference_accepts(case)  # it knows only webhook-* names
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


def test_a_tab_separated_list_is_where_hookline_is_more_lenient() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    now = int(time.time())
    signatures = [sign_standard_webhooks(s, "msg_1", now, b"{}") for s in (other, secret)]
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now),
               "webhook-signature": "\t".join(signatures)}
    case = StandardCase(secret, headers, b"{}")
    assert not standard_reference_accepts(case)
    assert hookline_standard_accepts(case)
    assert standard_reference_accepts(spaced(case))


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
    unusable = st.sampled_from(
        ["v1=" + good.upper(), "v1=" + good + "=x", "v1=" + good[:-1], "v1", " v1=" + good,
         "v1=not-hex", "v1=", "v2=" + good, "", "=x", "t"]
    )
    return mostly(well_formed, unusable | junk, odds=4)


def stripe_is_canonical(header: str) -> bool:
    """ASCII, with exactly one `t` item whose value (up to any second "=") is plain digits."""
    items = [item.split("=", 2) for item in header.split(",")]
    stamps = [item[1] for item in items if item[0] == "t" and len(item) > 1]
    return (header.isascii() and len(stamps) == 1
            and bool(CANONICAL_TIMESTAMP.fullmatch(stamps[0])))


def stripe_reference_accepts(case: StripeCase) -> bool:
    try:
        stripe.WebhookSignature.verify_header(case.body, case.header, case.secret, TOLERANCE)
    except (stripe.SignatureVerificationError, TypeError):
        return False  # TypeError: it compares a non-ASCII value with compare_digest
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
    hookline = hookline_stripe_accepts(case)
    reference = stripe_reference_accepts(case)
    canonical = stripe_is_canonical(case.header)
    too_new = case.timestamp > time.time() + TOLERANCE
    event(f"SDK accepts={reference}, canonical={canonical}, too new={too_new}")
    if canonical:
        assert hookline == (reference and not too_new)
    if hookline and case.header.isascii():
        assert reference


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
