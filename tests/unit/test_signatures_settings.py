"""The signature settings and what each source's ingress makes of them, without I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hookline.config import Settings, SettingsError, load_settings
from hookline.senders import bookings, chapa, transactions
from hookline.senders.signatures import InvalidSignature, sign_chapa, sign_standard_webhooks_v1a

CHAPA_SECRET = "chapa-secret-for-settings-tests"
BODY = orjson.dumps({"event": "charge.success", "tx_ref": "BK-SETTINGS", "reference": "AP1",
                     "status": "success", "amount": "100.00", "currency": "ETB"})


def secret_only(secret: str) -> dict[str, str]:
    key = secret.encode()
    return {"chapa-signature": hmac.new(key, key, hashlib.sha256).hexdigest()}


def chapa_ingress(**settings: object) -> chapa.ChapaIngress:
    ingress = chapa.ingress(Settings(chapa_secrets=(CHAPA_SECRET,), **settings))  # type: ignore[arg-type]
    assert ingress is not None
    return ingress


@pytest.mark.parametrize(("value", "allowed"),
                         [(None, False), ("", False), ("refuse", False), ("allow", True)])
def test_secret_only_chapa_signatures_setting_reads_allow_or_refuse(
        value: str | None, allowed: bool) -> None:
    env = {} if value is None else {"HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES": value}
    assert load_settings(env).chapa_secret_only_signatures is allowed


@pytest.mark.parametrize("value", ["yes", "true", "ALLOW", "allowed", "1"])
def test_any_other_secret_only_setting_is_a_settings_error(value: str) -> None:
    with pytest.raises(SettingsError, match="HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES"):
        load_settings({"HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES": value})


def test_chapa_ingress_refuses_secret_only_signatures_by_default() -> None:
    with pytest.raises(InvalidSignature):
        chapa_ingress().accept(secret_only(CHAPA_SECRET), BODY)


def test_chapa_ingress_marks_secret_only_deliveries_untrusted_when_allowed(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ingress = chapa_ingress(chapa_secret_only_signatures=True)
    assert "HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES" in caplog.text
    assert CHAPA_SECRET not in caplog.text
    assert ingress.accept(secret_only(CHAPA_SECRET), BODY).trusted is False
    assert ingress.accept(sign_chapa(CHAPA_SECRET, BODY), BODY).trusted is True


def test_chapa_ingress_trusts_a_body_signature_by_default() -> None:
    for name in ("x-chapa-signature", "chapa-signature"):
        header = {name: sign_chapa(CHAPA_SECRET, BODY)[name]}
        assert chapa_ingress().accept(header, BODY).trusted is True


def public_key(raw: bytes) -> str:
    return "whpk_" + base64.b64encode(raw).decode()


@pytest.mark.parametrize("source", ["BOOKINGS", "TRANSACTIONS"])
def test_public_keys_are_read_comma_separated_for_rotation(source: str) -> None:
    keys = [public_key(bytes([n]) * 32) for n in (1, 2)]
    settings = load_settings({f"HOOKLINE_{source}_PUBLIC_KEYS": f" {keys[0]} ,{keys[1]}"})
    assert getattr(settings, f"{source.lower()}_public_keys") == tuple(keys)


SEED = hashlib.sha256(b"settings-test ed25519 seed").digest()
BOOKING = orjson.dumps({"type": "booking.unused", "booking": {"reference": "BK-PK"}})
TRANSACTION = orjson.dumps({"transaction_id": "t-pk", "source_account": "a",
                            "destination_account": "b", "amount": "1.00", "currency": "EUR"})


def v1a_headers(body: bytes) -> dict[str, str]:
    now = int(time.time())
    return {"webhook-id": "msg_pk", "webhook-timestamp": str(now),
            "webhook-signature": sign_standard_webhooks_v1a(SEED, "msg_pk", now, body)}


def seed_public_key() -> str:
    raw = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    return public_key(raw)


def test_bookings_with_public_keys_only_is_configured_and_verifies() -> None:
    ingress = bookings.ingress(Settings(bookings_public_keys=(seed_public_key(),)))
    assert ingress is not None
    assert ingress.accept(v1a_headers(BOOKING), BOOKING).key == "msg_pk"
    with pytest.raises(InvalidSignature):
        ingress.accept(v1a_headers(BOOKING), BOOKING + b" ")


def test_transactions_with_public_keys_only_refuse_unsigned_deliveries() -> None:
    ingress = transactions.ingress(Settings(transactions_public_keys=(seed_public_key(),)))
    assert ingress.accept(v1a_headers(TRANSACTION), TRANSACTION).key == "t-pk"
    with pytest.raises(InvalidSignature):
        ingress.accept({}, TRANSACTION)


@pytest.mark.parametrize(("source", "build"), [("BOOKINGS", bookings.ingress),
                                               ("TRANSACTIONS", transactions.ingress)])
def test_a_bad_public_key_is_a_settings_error_naming_the_variable(
        source: str, build: Callable[[Settings], object]) -> None:
    settings = load_settings({f"HOOKLINE_{source}_PUBLIC_KEYS": "whpk_bm90LWEta2V5"})
    with pytest.raises(SettingsError, match=f"HOOKLINE_{source}_PUBLIC_KEYS: public key #1"):
        build(settings)
