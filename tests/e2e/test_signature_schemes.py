"""Signature schemes end to end through a running ingest, down to the record in the log:
Chapa's secret-only form when an operator allows it, Svix's header names, and Standard
Webhooks' asymmetric (ed25519) signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import requests
import svix

from hookline.config import Settings
from hookline.log.reader import StreamReader
from hookline.senders.signatures import sign_chapa, sign_standard_webhooks_v1a
from tests.chaos import webhooks
from tests.conftest import AMQP_URL, delete_streams, new_stream
from tests.processes import Pipeline, running_pipeline

CHAPA_SECRET = "chapa-e2e-signature-schemes-0001"
BOOKINGS_SECRET = "whsec_" + base64.b64encode(b"bookings-e2e-schemes-secret-0001").decode()
SENDER_KEY = hashlib.sha256(b"the booking app's ed25519 seed").digest()  # 32 bytes
OTHER_KEY = hashlib.sha256(b"a key nobody configured").digest()


def public_key(seed: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    return "whpk_" + base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def schemes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, str]]:
    """An ingest that allows secret-only Chapa signatures and knows the booking app's public
    key; its stream."""
    stream = new_stream()
    env = {"HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream,
           "HOOKLINE_CHAPA_SECRETS": CHAPA_SECRET,
           "HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES": "allow",
           "HOOKLINE_BOOKINGS_SECRETS": BOOKINGS_SECRET,
           "HOOKLINE_BOOKINGS_PUBLIC_KEYS": public_key(SENDER_KEY)}
    try:
        with running_pipeline(env, tmp_path_factory.mktemp("schemes"),
                              parts=("ingest",)) as pipeline:
            yield pipeline, stream
    finally:
        delete_streams(stream)


def post(pipeline: Pipeline, delivery: webhooks.Delivery,
         headers: dict[str, str]) -> requests.Response:
    return pipeline.http.post(f"{pipeline.ingest_url}/v1/webhooks/{delivery.source}",
                              data=delivery.body, timeout=30,
                              headers={"Content-Type": "application/json", **headers})


def accepted(answer: requests.Response) -> str:
    assert answer.status_code == 202, answer.text
    envelope_id: str = answer.json()["id"]
    return envelope_id


def logged(stream: str, envelope_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The envelope with this id, read back from the log."""
    deadline = time.monotonic() + timeout
    reader = StreamReader(Settings(amqp_url=AMQP_URL, stream=stream), 0, 100, "test-read",
                          should_stop=lambda: time.monotonic() > deadline, idle_seconds=0.2)
    try:
        for batch in reader.batches():
            for record in batch.records:
                envelope: dict[str, Any] = orjson.loads(record.body)
                if envelope["id"] == envelope_id:
                    return envelope
            reader.ack(batch)
    finally:
        reader.close()
    raise AssertionError(f"{envelope_id} is not in the log")


def secret_only(secret: str) -> dict[str, str]:
    key = secret.encode()
    return {"chapa-signature": hmac.new(key, key, hashlib.sha256).hexdigest()}


def test_an_allowed_secret_only_chapa_delivery_is_logged_untrusted(
        schemes: tuple[Pipeline, str]) -> None:
    pipeline, stream = schemes
    delivery = webhooks.chapa(f"secret-only-{time.time_ns()}")
    envelope = logged(stream, accepted(post(pipeline, delivery, secret_only(CHAPA_SECRET))))
    assert envelope["trusted"] is False
    assert envelope["payload"] == orjson.loads(delivery.body)


def test_a_body_signed_chapa_delivery_is_logged_without_the_untrusted_mark(
        schemes: tuple[Pipeline, str]) -> None:
    pipeline, stream = schemes
    for name in ("x-chapa-signature", "chapa-signature"):
        delivery = webhooks.chapa(f"body-signed-{name}-{time.time_ns()}")
        header = {name: sign_chapa(CHAPA_SECRET, delivery.body)[name]}
        envelope = logged(stream, accepted(post(pipeline, delivery, header)))
        assert "trusted" not in envelope


def svix_headers(delivery: webhooks.Delivery, secret: str) -> dict[str, str]:
    """What a sender using the svix library sends."""
    now = datetime.now(UTC)
    signature = svix.Webhook(secret).sign(delivery.msg_id, now, delivery.body.decode())
    return {"svix-id": delivery.msg_id, "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": signature}


def test_a_booking_signed_by_the_svix_library_with_svix_header_names_is_accepted(
        schemes: tuple[Pipeline, str]) -> None:
    pipeline, stream = schemes
    delivery = webhooks.booking(f"BK-SVIX-{time.time_ns()}", "svix@example.com")
    envelope = logged(stream, accepted(post(pipeline, delivery,
                                            svix_headers(delivery, BOOKINGS_SECRET))))
    assert envelope["id"] == delivery.envelope_id
    assert "trusted" not in envelope


def v1a_headers(delivery: webhooks.Delivery, seed: bytes) -> dict[str, str]:
    now = int(time.time())
    return {"webhook-id": delivery.msg_id, "webhook-timestamp": str(now),
            "webhook-signature": sign_standard_webhooks_v1a(seed, delivery.msg_id, now,
                                                            delivery.body)}


def test_a_booking_signed_only_with_ed25519_is_accepted_with_the_public_key_set(
        schemes: tuple[Pipeline, str]) -> None:
    pipeline, stream = schemes
    delivery = webhooks.booking(f"BK-V1A-{time.time_ns()}", "v1a@example.com")
    envelope = logged(stream, accepted(post(pipeline, delivery, v1a_headers(delivery,
                                                                            SENDER_KEY))))
    assert envelope["id"] == delivery.envelope_id
    answer = post(pipeline, delivery, v1a_headers(delivery, OTHER_KEY))
    assert answer.status_code == 401, answer.text
