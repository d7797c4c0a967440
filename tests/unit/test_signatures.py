"""Signature verification against published vectors, edge cases and arbitrary input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import stripe
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.senders.signatures import (
    ChapaVerifier,
    InvalidSignature,
    StandardWebhooksVerifier,
    StripeVerifier,
    sign_chapa,
    sign_standard_webhooks,
    sign_standard_webhooks_v1a,
    sign_stripe,
)

PROVIDERS = Path(__file__).resolve().parents[3] / "shared/fixtures/providers"
VECTORS_FILE = json.loads((PROVIDERS / "standard_webhooks_vectors.json").read_text())
VECTORS: list[dict[str, Any]] = VECTORS_FILE["vectors"]
COSIUM = VECTORS[2]
CHAPA_BODIES = sorted(PROVIDERS.glob("chapa_*.json"))
STRIPE_BODIES = sorted(PROVIDERS.glob("stripe_*.json"))

SECRET_A = "whsec_" + base64.b64encode(b"a" * 24).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()
SECRET_C = "whsec_" + base64.b64encode(b"c" * 32).decode()
NOW = 1_700_000_000
BODY = b'{"type":"payment.succeeded","amount":1099}'


def standard_headers(msg_id: str, timestamp: int | str, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def signed_standard(secret: str, timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    signature = sign_standard_webhooks(secret, "msg_1", timestamp, body)
    return standard_headers("msg_1", timestamp, signature)


def vector_headers(vector: dict[str, Any], signature: str | None = None) -> dict[str, str]:
    return standard_headers(
        vector["msg_id"], vector["timestamp"], signature or vector["expected_signature"]
    )


def standard_rejects(verifier: StandardWebhooksVerifier, headers: Any, body: bytes) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verifier.verify(headers, body, now=NOW)
    return str(caught.value)


# --- Standard Webhooks: published vectors -------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["msg_id"])
def test_published_vector_verifies_and_returns_webhook_id(vector: dict[str, Any]) -> None:
    verifier = StandardWebhooksVerifier([vector["secret"]])
    body = vector["payload"].encode()
    headers = vector_headers(vector)
    assert verifier.verify(headers, body, now=vector["timestamp"]) == vector["msg_id"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["msg_id"])
def test_sign_standard_webhooks_reproduces_published_signature(vector: dict[str, Any]) -> None:
    signature = sign_standard_webhooks(
        vector["secret"], vector["msg_id"], vector["timestamp"], vector["payload"].encode()
    )
    assert signature == vector["expected_signature"]


def _known_bad() -> list[tuple[dict[str, Any], str]]:
    return [
        (vector, bad)
        for vector in VECTORS
        for bad in vector.get("known_bad_signatures_from_same_suite", [])
    ]


@pytest.mark.parametrize(("vector", "bad_signature"), _known_bad())
def test_known_bad_signature_from_published_suite_is_rejected(
    vector: dict[str, Any], bad_signature: str
) -> None:
    verifier = StandardWebhooksVerifier([vector["secret"]])
    with pytest.raises(InvalidSignature):
        verifier.verify(
            vector_headers(vector, bad_signature), vector["payload"].encode(), vector["timestamp"]
        )


def test_cosium_unpadded_signature_is_rejected() -> None:
    negative = COSIUM["negative_cases_in_same_test"]
    headers = vector_headers(COSIUM, negative["signature_without_padding_invalid"])
    verifier = StandardWebhooksVerifier([COSIUM["secret"]])
    with pytest.raises(InvalidSignature):
        verifier.verify(headers, COSIUM["payload"].encode(), now=negative["clock_fixed_at"])


def test_cosium_tampered_payload_is_rejected() -> None:
    negative = COSIUM["negative_cases_in_same_test"]
    verifier = StandardWebhooksVerifier([COSIUM["secret"]])
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verifier.verify(
            vector_headers(COSIUM),
            negative["tampered_payload"].encode(),
            now=negative["clock_fixed_at"],
        )


def test_cosium_timestamp_plus_one_is_rejected() -> None:
    negative = COSIUM["negative_cases_in_same_test"]
    headers = vector_headers(COSIUM)
    headers["webhook-timestamp"] = str(negative["timestamp_plus_one"])
    verifier = StandardWebhooksVerifier([COSIUM["secret"]])
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verifier.verify(headers, COSIUM["payload"].encode(), now=negative["clock_fixed_at"])


def test_cosium_changed_msg_id_is_rejected() -> None:
    negative = COSIUM["negative_cases_in_same_test"]
    headers = vector_headers(COSIUM)
    headers["webhook-id"] = negative["msg_id_changed"]
    verifier = StandardWebhooksVerifier([COSIUM["secret"]])
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verifier.verify(headers, COSIUM["payload"].encode(), now=negative["clock_fixed_at"])


ASYMMETRIC = VECTORS_FILE["asymmetric_ed25519_vector"]
SEED = hashlib.sha256(b"a sender's ed25519 seed").digest()
OTHER_SEED = hashlib.sha256(b"another sender's ed25519 seed").digest()


def public_key(seed: bytes) -> str:
    raw = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    return "whpk_" + base64.b64encode(raw).decode()


def asymmetric_verify(signature: str, public_keys: list[str], secrets: list[str]) -> str:
    headers = standard_headers(ASYMMETRIC["msg_id"], ASYMMETRIC["timestamp"], signature)
    verifier = StandardWebhooksVerifier(secrets, public_keys=public_keys)
    return verifier.verify(headers, ASYMMETRIC["payload"].encode(), now=ASYMMETRIC["timestamp"])


def test_published_v1a_vector_verifies_with_its_public_key() -> None:
    signature = ASYMMETRIC["expected_signature"]
    assert asymmetric_verify(signature, [ASYMMETRIC["public_key"]], []) == ASYMMETRIC["msg_id"]


def test_published_invalid_v1a_case_is_rejected() -> None:
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        asymmetric_verify(ASYMMETRIC["invalid_signature_case"], [ASYMMETRIC["public_key"]], [])


@pytest.mark.parametrize("key", ["expected_signature", "invalid_signature_case"])
def test_a_v1a_signature_alone_is_refused_without_a_public_key(key: str) -> None:
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        asymmetric_verify(ASYMMETRIC[key], [], [COSIUM["secret"]])


@pytest.mark.parametrize("key", ["expected_signature", "invalid_signature_case"])
def test_v1a_entries_are_ignored_beside_a_valid_v1(key: str) -> None:
    signature = f"{ASYMMETRIC[key]} {COSIUM['expected_signature']}"
    assert asymmetric_verify(signature, [], [COSIUM["secret"]]) == ASYMMETRIC["msg_id"]


@pytest.mark.parametrize("signer", [SEED, OTHER_SEED], ids=["first", "second"])
def test_either_rotated_public_key_verifies_a_v1a_signature(signer: bytes) -> None:
    verifier = StandardWebhooksVerifier([], public_keys=[public_key(SEED), public_key(OTHER_SEED)])
    headers = standard_headers("msg_1", NOW, sign_standard_webhooks_v1a(signer, "msg_1", NOW, BODY))
    assert verifier.verify(headers, BODY, now=NOW) == "msg_1"
    standard_rejects(verifier, headers, BODY + b" ")
    standard_rejects(StandardWebhooksVerifier([], public_keys=[public_key(SEED)]),
                     standard_headers("msg_1", NOW, sign_standard_webhooks_v1a(
                         bytes(32), "msg_1", NOW, BODY)), BODY)


def test_a_verifier_with_public_keys_only_refuses_a_v1_signature() -> None:
    verifier = StandardWebhooksVerifier([], public_keys=[public_key(SEED)])
    standard_rejects(verifier, signed_standard(SECRET_A), BODY)


def test_secrets_and_public_keys_together_take_either_kind() -> None:
    verifier = StandardWebhooksVerifier([SECRET_A], public_keys=[public_key(SEED)])
    v1a = sign_standard_webhooks_v1a(SEED, "msg_1", NOW, BODY)
    assert verifier.verify(standard_headers("msg_1", NOW, v1a), BODY, now=NOW) == "msg_1"
    assert verifier.verify(signed_standard(SECRET_A), BODY, now=NOW) == "msg_1"


def test_a_public_key_is_taken_with_or_without_prefix_or_padding() -> None:
    key = public_key(SEED)
    v1a = sign_standard_webhooks_v1a(SEED, "msg_1", NOW, BODY)
    for form in (key, key.removeprefix("whpk_"), key.rstrip("=")):
        verifier = StandardWebhooksVerifier([], public_keys=[form])
        assert verifier.verify(standard_headers("msg_1", NOW, v1a), BODY, now=NOW) == "msg_1"


@pytest.mark.parametrize(("keys", "message"), [
    (["whpk_!!!"], "public key #1 is not"),
    ([public_key(SEED), "whpk_" + base64.b64encode(bytes(31)).decode()], "public key #2 is not"),
    (["whpk_" + base64.b64encode(bytes(44)).decode()], "public key #1 is not"),
    (["whpk_"], "public key #1 is not"),
])
def test_a_bad_public_key_is_refused_naming_its_position(keys: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StandardWebhooksVerifier([], public_keys=keys)


def test_a_verifier_needs_a_secret_or_a_public_key() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        StandardWebhooksVerifier([], public_keys=[])


# --- Standard Webhooks: as the svix library reads headers -----------------------------------


def svix_named(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("webhook-", "svix-"): value for name, value in headers.items()}


def test_svix_header_names_are_read() -> None:
    verifier = StandardWebhooksVerifier([SECRET_A])
    assert verifier.verify(svix_named(signed_standard(SECRET_A)), BODY, now=NOW) == "msg_1"


@pytest.mark.parametrize("name", ["id", "timestamp", "signature"])
def test_a_svix_header_is_read_before_its_webhook_namesake(name: str) -> None:
    """As the svix library does: each svix-* header, when sent, is the one read."""
    good = signed_standard(SECRET_A)
    wrong = signed_standard(SECRET_B, NOW - 1)
    wrong["webhook-id"] = "msg_2"
    verifier = StandardWebhooksVerifier([SECRET_A])
    assert verifier.verify({**wrong, f"svix-{name}": good[f"webhook-{name}"],
                            **{k: v for k, v in good.items() if k != f"webhook-{name}"}},
                           BODY, now=NOW) == "msg_1"
    standard_rejects(verifier, {**good, f"svix-{name}": wrong[f"webhook-{name}"]}, BODY)


@pytest.mark.parametrize("separator", ["  ", "\t", " \t ", "\n"])
def test_signature_lists_split_on_any_whitespace(separator: str) -> None:
    headers = signed_standard(SECRET_A)
    other = sign_standard_webhooks(SECRET_B, "msg_1", NOW, BODY)
    headers["webhook-signature"] = other + separator + headers["webhook-signature"]
    assert StandardWebhooksVerifier([SECRET_A]).verify(headers, BODY, now=NOW) == "msg_1"


@pytest.mark.parametrize("before", ["v2,abcd", "v2," + "A" * 44, "v1a,!!", "x", "v1,", "v1é,abc",
                                    "v1,!" + "A" * 43, ",", "v1,a,b"])
def test_an_unknown_or_unusable_entry_does_not_spoil_a_valid_v1(before: str) -> None:
    headers = signed_standard(SECRET_A)
    headers["webhook-signature"] = f"{before} {headers['webhook-signature']}"
    assert StandardWebhooksVerifier([SECRET_A]).verify(headers, BODY, now=NOW) == "msg_1"


def test_spec_example_headers_parse_but_match_no_secret() -> None:
    example = VECTORS_FILE["spec_example_headers"]
    headers = {name: example[name] for name in ("webhook-id", "webhook-timestamp")}
    headers["webhook-signature"] = example["webhook-signature"]
    verifier = StandardWebhooksVerifier([SECRET_A])
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verifier.verify(headers, b"{}", now=int(example["webhook-timestamp"]))


# --- Standard Webhooks: behaviour ---------------------------------------------------------


@pytest.mark.parametrize("signer", [SECRET_A, SECRET_B])
def test_either_rotated_secret_verifies(signer: str) -> None:
    verifier = StandardWebhooksVerifier([SECRET_A, SECRET_B])
    assert verifier.verify(signed_standard(signer), BODY, now=NOW) == "msg_1"


def test_secret_outside_the_rotation_is_rejected() -> None:
    verifier = StandardWebhooksVerifier([SECRET_A, SECRET_B])
    assert "no webhook-signature" in standard_rejects(verifier, signed_standard(SECRET_C), BODY)


def test_header_with_old_and_new_signatures_verifies_with_new_secret_only() -> None:
    old = sign_standard_webhooks(SECRET_A, "msg_1", NOW, BODY)
    new = sign_standard_webhooks(SECRET_B, "msg_1", NOW, BODY)
    headers = standard_headers("msg_1", NOW, f"{old} {new}")
    assert StandardWebhooksVerifier([SECRET_B]).verify(headers, BODY, now=NOW) == "msg_1"


def test_bare_base64_secret_equals_whsec_prefixed_secret() -> None:
    bare = SECRET_B.removeprefix("whsec_")
    verifier = StandardWebhooksVerifier([bare])
    assert verifier.verify(signed_standard(SECRET_B), BODY, now=NOW) == "msg_1"


def test_unpadded_secret_is_accepted() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 31).decode().rstrip("=")
    headers = signed_standard(secret)
    assert StandardWebhooksVerifier([secret]).verify(headers, BODY, now=NOW) == "msg_1"


def test_plain_dict_with_lowercase_keys_and_case_insensitive_mapping_both_work() -> None:
    class CaseInsensitive(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            return {k.lower(): v for k, v in self.items()}.get(key.lower(), default)

    headers = signed_standard(SECRET_A)
    shouting = CaseInsensitive({k.upper(): v for k, v in headers.items()})
    verifier = StandardWebhooksVerifier([SECRET_A])
    assert verifier.verify(shouting, BODY, now=NOW) == verifier.verify(headers, BODY, now=NOW)


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_standard_timestamp_within_tolerance_is_accepted(skew: int) -> None:
    verifier = StandardWebhooksVerifier([SECRET_A])
    assert verifier.verify(signed_standard(SECRET_A, NOW + skew), BODY, now=NOW) == "msg_1"


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_standard_timestamp_outside_tolerance_is_rejected_both_directions(skew: int) -> None:
    verifier = StandardWebhooksVerifier([SECRET_A])
    message = standard_rejects(verifier, signed_standard(SECRET_A, NOW + skew), BODY)
    assert "tolerance" in message


def test_custom_tolerance_is_honoured() -> None:
    verifier = StandardWebhooksVerifier([SECRET_A], tolerance=10)
    assert verifier.verify(signed_standard(SECRET_A, NOW - 10), BODY, now=NOW) == "msg_1"
    standard_rejects(verifier, signed_standard(SECRET_A, NOW - 11), BODY)


@pytest.mark.parametrize("clock", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_clock_fails_closed(clock: float) -> None:
    verifier = StandardWebhooksVerifier([SECRET_A])
    with pytest.raises(InvalidSignature):
        verifier.verify(signed_standard(SECRET_A), BODY, now=clock)


def test_tampered_body_is_rejected() -> None:
    verifier = StandardWebhooksVerifier([SECRET_A])
    standard_rejects(verifier, signed_standard(SECRET_A), BODY + b" ")


def _malformed_standard_headers() -> list[dict[str, str]]:
    good = signed_standard(SECRET_A)
    sig = good["webhook-signature"]
    cases: list[dict[str, str]] = [{}, {**good, "webhook-id": ""}]
    cases += [{k: v for k, v in good.items() if k != name} for name in good]
    cases += [{**good, "webhook-id": bad} for bad in ["msg 1", "msg\t1", "msg_é", "\x00"]]
    timestamps = [
        "",
        "abc",
        "-1",
        "+1700000000",
        " 1700000000",
        "1700000000 ",
        "1700000000.0",
        "1.7e9",
        "01700000000",
        "9" * 5000,
        "\uff11\uff17" + "\uff10" * 8,
        "0x6553f100",
        "nan",
    ]
    cases += [{**good, "webhook-timestamp": bad} for bad in timestamps]
    signatures = [
        "",
        " ",
        "v1",
        "v1,",
        ",abc",
        sig + ",x",
        "v1,!!!!" + sig[3:],
        sig.rstrip("="),
        sig[:-1] + "é",
        "v1;" + sig[3:],
        "v1," + "A" * 5,
        "v1,====",
        "v2," + sig[3:],
        "V1," + sig[3:],
    ]
    cases += [{**good, "webhook-signature": bad} for bad in signatures]
    return cases


@pytest.mark.parametrize("headers", _malformed_standard_headers())
def test_malformed_standard_headers_raise_invalid_signature(headers: dict[str, str]) -> None:
    message = standard_rejects(StandardWebhooksVerifier([SECRET_A]), headers, BODY)
    assert message
    assert SECRET_A.removeprefix("whsec_") not in message
    assert BODY.decode() not in message


@pytest.mark.parametrize("msg_id", ["msg 1", "msg\t1", "msg_1\n", "\x7f", "msg_é"])
def test_correctly_signed_message_with_malformed_id_is_rejected(msg_id: str) -> None:
    signature = sign_standard_webhooks(SECRET_A, msg_id, NOW, BODY)
    headers = standard_headers(msg_id, NOW, signature)
    message = standard_rejects(StandardWebhooksVerifier([SECRET_A]), headers, BODY)
    assert "webhook-id" in message


header_text = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda raw: raw.decode("latin-1")),  # what WSGI hands over
    st.from_regex(r"v1,[A-Za-z0-9+/=]{0,50}( v1a?,[A-Za-z0-9+/=]{0,50})*", fullmatch=True),
)


@settings(max_examples=500, deadline=None)
@given(
    msg_id=header_text,
    timestamp=st.one_of(header_text, st.integers().map(str)),
    signature=header_text,
    body=st.binary(max_size=200),
)
def test_arbitrary_standard_headers_only_ever_raise_invalid_signature(
    msg_id: str, timestamp: str, signature: str, body: bytes
) -> None:
    verifier = StandardWebhooksVerifier([SECRET_A])
    try:
        verifier.verify(standard_headers(msg_id, timestamp, signature), body, now=NOW)
    except InvalidSignature:
        return
    # Only a genuine signature may pass.
    assert sign_standard_webhooks(SECRET_A, msg_id, int(timestamp), body) in signature.split()


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=500), skew=st.integers(-300, 300))
def test_any_body_signed_within_tolerance_verifies(body: bytes, skew: int) -> None:
    headers = signed_standard(SECRET_A, NOW + skew, body)
    assert StandardWebhooksVerifier([SECRET_A]).verify(headers, body, now=NOW) == "msg_1"


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (["whsec_!!!notbase64"], "secret #1 is not valid base64"),
        ([SECRET_A, "whsec_abcde"], "secret #2 is not valid base64"),
        ([SECRET_A, "d2hzZWM=é"], "secret #2 is not valid base64"),
        (["whsec_"], "secret #1 is empty"),
        ([], "at least one secret"),
    ],
)
def test_bad_standard_secret_is_refused_without_echoing_it(
    secrets: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        StandardWebhooksVerifier(secrets)
    assert all(s.removeprefix("whsec_") not in str(caught.value) for s in secrets if s != "whsec_")


def test_single_string_instead_of_list_is_refused() -> None:
    with pytest.raises(TypeError):
        StandardWebhooksVerifier(SECRET_A)


# --- Stripe -------------------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_secret_0123456789abcdef"
STRIPE_OTHER = "whsec_other_secret_9876543210"


def stripe_hex(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def stripe_rejects(verifier: StripeVerifier, header: str | None, body: bytes = BODY) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verifier.verify(header, body, now=NOW)
    return str(caught.value)


def test_sign_stripe_follows_the_documented_scheme() -> None:
    expected = f"t={NOW},v1={stripe_hex(STRIPE_SECRET, NOW, BODY)}"
    assert sign_stripe(STRIPE_SECRET, NOW, BODY) == expected


@pytest.mark.parametrize("fixture", STRIPE_BODIES, ids=lambda p: p.name)
def test_stripe_fixture_event_verifies(fixture: Path) -> None:
    body = fixture.read_bytes()
    header = sign_stripe(STRIPE_SECRET, NOW, body)
    StripeVerifier([STRIPE_SECRET]).verify(header, body, now=NOW)
    stripe_rejects(StripeVerifier([STRIPE_OTHER]), header, body)
    stripe_rejects(StripeVerifier([STRIPE_SECRET]), header, body.replace(b"evt_", b"evt_x"))


@pytest.mark.parametrize("signer", [STRIPE_SECRET, STRIPE_OTHER])
def test_either_rotated_stripe_secret_verifies(signer: str) -> None:
    verifier = StripeVerifier([STRIPE_SECRET, STRIPE_OTHER])
    verifier.verify(sign_stripe(signer, NOW, BODY), BODY, now=NOW)


def test_stripe_header_with_several_v1_and_v0_verifies_when_any_v1_matches() -> None:
    good = stripe_hex(STRIPE_SECRET, NOW, BODY)
    wrong = stripe_hex(STRIPE_OTHER, NOW, BODY)
    header = f"t={NOW},v1={wrong},v0={'0' * 64},v1={good}"
    StripeVerifier([STRIPE_SECRET]).verify(header, BODY, now=NOW)


def test_stripe_v0_signature_alone_is_not_enough() -> None:
    header = f"t={NOW},v0={stripe_hex(STRIPE_SECRET, NOW, BODY)}"
    assert "no v1" in stripe_rejects(StripeVerifier([STRIPE_SECRET]), header)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_stripe_timestamp_within_tolerance_is_accepted(skew: int) -> None:
    header = sign_stripe(STRIPE_SECRET, NOW + skew, BODY)
    StripeVerifier([STRIPE_SECRET]).verify(header, BODY, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -259_200, 259_200])
def test_stripe_timestamp_outside_tolerance_is_rejected_both_directions(skew: int) -> None:
    header = sign_stripe(STRIPE_SECRET, NOW + skew, BODY)
    assert "tolerance" in stripe_rejects(StripeVerifier([STRIPE_SECRET]), header)


ARABIC_INDIC_NOW = "\u0661\u0667" + "\u0660" * 8  # int() accepts these; Stripe's SDK does too


def _malformed_stripe_headers() -> list[str | None]:
    sig = stripe_hex(STRIPE_SECRET, NOW, BODY)
    return [
        None,
        "",
        ",",
        "t",
        "v1",
        f"v1={sig}",
        f"t={NOW}",
        f"t={NOW},v1=",
        f"t=,v1={sig}",
        f"t={NOW},t={NOW},v1={sig}",
        f"t={NOW},v1={sig.upper()}",
        f"t={NOW},v1={sig[:-1]}",
        f"t={NOW},v1={sig}0",
        f"t=+{NOW},v1={sig}",
        f"t= {NOW},v1={sig}",
        f"t=0{NOW},v1={sig}",
        f"t={NOW}.0,v1={sig}",
        f"t=-{NOW},v1={sig}",
        f"t={'9' * 5000},v1={sig}",
        "t=" + ARABIC_INDIC_NOW + f",v1={sig}",
        f"t={NOW}, v1={sig}",
        f"t={NOW};v1={sig}",
        f"t={NOW},v1={sig[:-1]}é",
        f"T={NOW},V1={sig}",
        f"t={NOW},v1={sig}\n",
        f"t={NOW},v1,v1={sig}",
        f"t={NOW},v1={sig},t",
    ]


def _stripe_headers_its_library_accepts() -> list[str]:
    """stripe-python's WebhookSignature reads these (items split on "," then on at most two
    "="; other schemes ignored), and so does hookline."""
    sig = stripe_hex(STRIPE_SECRET, NOW, BODY)
    return [
        f"t={NOW},v1=not-hex,v1={sig}",
        f"t={NOW},v1={sig.upper()},v1={sig}",
        f"t={NOW},v1={sig},v1={sig[:-1]}é",
        f"t={NOW},v1=,v1={sig}",
        f"t={NOW},v2={sig},v1={sig}",
        f"t={NOW},v1={sig},junk",
        f"t={NOW},,v1={sig}",
        f"t={NOW},=x,v1={sig}",
        f"t={NOW},v1={sig}=",
        f"t={NOW},v1={sig}=anything",
    ]


@pytest.mark.parametrize("header", _stripe_headers_its_library_accepts())
def test_one_unusable_stripe_entry_does_not_spoil_a_valid_v1(header: str) -> None:
    StripeVerifier([STRIPE_SECRET]).verify(header, BODY, now=NOW)
    assert stripe.WebhookSignature.verify_header(BODY, header, STRIPE_SECRET, tolerance=None)


@pytest.mark.parametrize("header", _malformed_stripe_headers())
def test_malformed_stripe_headers_raise_invalid_signature(header: str | None) -> None:
    message = stripe_rejects(StripeVerifier([STRIPE_SECRET]), header)
    assert message
    assert STRIPE_SECRET not in message
    assert BODY.decode() not in message


@settings(max_examples=500, deadline=None)
@given(
    header=st.one_of(
        st.none(),
        header_text,
        st.from_regex(r"((t|v1|v0)=[0-9a-f]{0,66},?){0,4}", fullmatch=True),
    ),
    body=st.binary(max_size=200),
)
def test_arbitrary_stripe_headers_only_ever_raise_invalid_signature(
    header: str | None, body: bytes
) -> None:
    try:
        StripeVerifier([STRIPE_SECRET]).verify(header, body, now=NOW)
    except InvalidSignature:
        return
    # Only a genuine signature may pass.
    assert header is not None
    assert stripe_hex(STRIPE_SECRET, NOW, body) in header


@pytest.mark.parametrize(
    ("secrets", "message"),
    [([], "at least one secret"), ([STRIPE_SECRET, " "], "secret #2 is empty"), ([""], "#1")],
)
def test_bad_stripe_secret_is_refused(secrets: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StripeVerifier(secrets)


# --- Chapa --------------------------------------------------------------------------------

CHAPA_SECRET = "chapa-webhook-secret-for-tests"
CHAPA_OTHER = "another-chapa-secret"


def chapa_rejects(verifier: ChapaVerifier, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verifier.verify(headers, body)
    return str(caught.value)


def secret_only(secret: str) -> str:
    """The `chapa-signature` Chapa sends outside Signature mode: the secret signed by itself."""
    key = secret.encode()
    return hmac.new(key, key, hashlib.sha256).hexdigest()


def test_sign_chapa_signs_the_body_in_both_headers_as_chapa_signature_mode_does() -> None:
    body_signature = hmac.new(CHAPA_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign_chapa(CHAPA_SECRET, BODY) == {
        "x-chapa-signature": body_signature, "chapa-signature": body_signature}


def test_a_secret_only_chapa_signature_is_refused_by_default() -> None:
    message = chapa_rejects(ChapaVerifier([CHAPA_SECRET]),
                            {"chapa-signature": secret_only(CHAPA_SECRET)}, BODY)
    assert "only the secret" in message


def test_a_secret_only_signature_forged_onto_another_body_is_refused() -> None:
    genuine = {"chapa-signature": secret_only(CHAPA_SECRET),
               "x-chapa-signature": sign_chapa(CHAPA_SECRET, BODY)["x-chapa-signature"]}
    forged = {"chapa-signature": genuine["chapa-signature"]}
    assert ChapaVerifier([CHAPA_SECRET]).verify(genuine, BODY) is True
    chapa_rejects(ChapaVerifier([CHAPA_SECRET]), forged, BODY.replace(b"1099", b"9999"))
    chapa_rejects(ChapaVerifier([CHAPA_SECRET]), genuine, BODY.replace(b"1099", b"9999"))


def test_a_secret_only_signature_is_accepted_untrusted_when_allowed() -> None:
    verifier = ChapaVerifier([CHAPA_SECRET, CHAPA_OTHER], allow_secret_only=True)
    for signer in (CHAPA_SECRET, CHAPA_OTHER):
        assert verifier.verify({"chapa-signature": secret_only(signer)}, BODY) is False
    chapa_rejects(verifier, {"chapa-signature": secret_only("not-a-configured-secret")}, BODY)


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("name", ["x-chapa-signature", "chapa-signature"])
def test_a_signature_over_the_body_is_trusted_in_either_header(allow: bool, name: str) -> None:
    headers = {name: sign_chapa(CHAPA_SECRET, BODY)[name]}
    assert ChapaVerifier([CHAPA_SECRET], allow_secret_only=allow).verify(headers, BODY) is True


def test_the_body_signature_decides_when_both_forms_are_sent() -> None:
    headers = {"x-chapa-signature": sign_chapa(CHAPA_SECRET, BODY)["x-chapa-signature"],
               "chapa-signature": secret_only(CHAPA_SECRET)}
    verifier = ChapaVerifier([CHAPA_SECRET], allow_secret_only=True)
    assert verifier.verify(headers, BODY) is True
    assert verifier.verify({**headers, "x-chapa-signature": "0" * 64}, BODY) is False


def test_x_chapa_signature_never_stands_for_the_secret_only_form() -> None:
    verifier = ChapaVerifier([CHAPA_SECRET], allow_secret_only=True)
    chapa_rejects(verifier, {"x-chapa-signature": secret_only(CHAPA_SECRET)}, BODY)


def test_chapa_fixtures_are_present() -> None:
    assert len(CHAPA_BODIES) >= 4


@pytest.mark.parametrize("fixture", CHAPA_BODIES, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "names",
    [("x-chapa-signature", "chapa-signature"), ("x-chapa-signature",), ("chapa-signature",)],
)
def test_each_chapa_header_alone_suffices(fixture: Path, names: tuple[str, ...]) -> None:
    body = fixture.read_bytes()
    signed = sign_chapa(CHAPA_SECRET, body)
    ChapaVerifier([CHAPA_SECRET]).verify({n: signed[n] for n in names}, body)


@pytest.mark.parametrize("fixture", CHAPA_BODIES, ids=lambda p: p.name)
def test_chapa_wrong_secret_fails(fixture: Path) -> None:
    body = fixture.read_bytes()
    message = chapa_rejects(ChapaVerifier([CHAPA_OTHER]), sign_chapa(CHAPA_SECRET, body), body)
    assert CHAPA_SECRET not in message
    assert CHAPA_OTHER not in message


@pytest.mark.parametrize("fixture", CHAPA_BODIES, ids=lambda p: p.name)
def test_chapa_tampered_body_fails_on_body_signature(fixture: Path) -> None:
    body = fixture.read_bytes()
    signed = sign_chapa(CHAPA_SECRET, body)
    only_body = {"x-chapa-signature": signed["x-chapa-signature"]}
    chapa_rejects(ChapaVerifier([CHAPA_SECRET]), only_body, body.replace(b"ETB", b"USD"))


@pytest.mark.parametrize("signer", [CHAPA_SECRET, CHAPA_OTHER])
@pytest.mark.parametrize("name", ["x-chapa-signature", "chapa-signature"])
def test_either_rotated_chapa_secret_verifies(signer: str, name: str) -> None:
    header = {name: sign_chapa(signer, BODY)[name]}
    ChapaVerifier([CHAPA_SECRET, CHAPA_OTHER]).verify(header, BODY)


def test_malformed_chapa_header_does_not_spoil_a_valid_one() -> None:
    signed = sign_chapa(CHAPA_SECRET, BODY)
    headers = {"x-chapa-signature": "not hex", "chapa-signature": signed["chapa-signature"]}
    assert ChapaVerifier([CHAPA_SECRET]).verify(headers, BODY) is True


def _bad_chapa_headers() -> list[dict[str, str]]:
    body_sig, secret_sig = sign_chapa(CHAPA_SECRET, BODY)["x-chapa-signature"], secret_only(
        CHAPA_SECRET)
    return [
        {"chapa-signature": secret_sig},
        {},
        {"x-chapa-signature": ""},
        {"chapa-signature": secret_sig.upper()},
        {"x-chapa-signature": body_sig[:-1]},
        {"x-chapa-signature": body_sig + "0"},
        {"x-chapa-signature": " " + body_sig},
        {"chapa-signature": secret_sig[:-1] + "é"},
        {"x-chapa-signature": secret_sig},
        {"chapa-signature": body_sig.upper()},
        {"X-Chapa-Signature-Other": body_sig},
    ]


@pytest.mark.parametrize("headers", _bad_chapa_headers())
def test_bad_chapa_headers_raise_invalid_signature(headers: dict[str, str]) -> None:
    message = chapa_rejects(ChapaVerifier([CHAPA_SECRET]), headers, BODY)
    assert CHAPA_SECRET not in message
    assert BODY.decode() not in message


@settings(max_examples=500, deadline=None)
@given(body_sig=header_text, secret_sig=header_text, body=st.binary(max_size=200))
def test_arbitrary_chapa_headers_only_ever_raise_invalid_signature(
    body_sig: str, secret_sig: str, body: bytes
) -> None:
    headers = {"x-chapa-signature": body_sig, "chapa-signature": secret_sig}
    with pytest.raises(InvalidSignature):
        ChapaVerifier([CHAPA_SECRET]).verify(headers, body)
