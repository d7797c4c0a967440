"""The signature settings and what each source's ingress makes of them, without I/O."""

from __future__ import annotations

import hashlib
import hmac
import logging

import orjson
import pytest

from eventlog.settings import Settings, SettingsError, load_settings
from ingest.signatures import InvalidSignature, sign_chapa
from ingest.sources import chapa

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

