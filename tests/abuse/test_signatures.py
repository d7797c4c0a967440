"""Nobody let in: a captured request goes stale, a signature does not fit another body, and
checking a signature takes as long however much of it is right."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import requests

from hookline.config import OperatorToken
from hookline.senders.signatures import (
    ChapaVerifier,
    InvalidSignature,
    StandardWebhooksVerifier,
    StripeVerifier,
    sign_standard_webhooks_v1a,
    sign_stripe,
)
from hookline.web.api import _token_of
from tests.abuse.conftest import CANARIES, STRIPE_TOLERANCE, TOKEN, Hostile
from tests.chaos import webhooks
from tests.processes import NotYet, eventually

ROOT = Path(__file__).resolve().parents[2]
STALE = 301  # seconds: past the Standard Webhooks tolerance of 5 minutes


def refused(answer: requests.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_signature"


# -- replays -----------------------------------------------------------------------------------


def test_a_captured_stripe_request_replayed_after_the_tolerance_is_refused(
        hostile: Hostile) -> None:
    delivery = webhooks.stripe(f"replay-{time.time_ns()}")
    captured = delivery.headers(CANARIES)
    assert hostile.post(delivery, captured).status_code == 202
    assert hostile.post(delivery, captured).status_code == 202  # a retry, absorbed later

    def stale() -> None:
        answer = hostile.post(delivery, captured)
        if answer.status_code == 202:
            raise NotYet("still within the tolerance")
        refused(answer)
    eventually(stale, timeout=STRIPE_TOLERANCE + 15, interval=0.5)


@pytest.mark.parametrize("source", ["transactions", "bookings"])
def test_a_standard_webhooks_request_signed_outside_five_minutes_is_refused(
        hostile: Hostile, source: str) -> None:
    delivery = (webhooks.transaction(f"old-{time.time_ns()}") if source == "transactions"
                else webhooks.booking(f"BK-old-{time.time_ns()}", "old@example.com"))
    now = int(time.time())
    for at in (now - STALE, now + STALE):
        refused(hostile.post(delivery, delivery.headers(CANARIES, at=at)))
    assert hostile.post(delivery, delivery.headers(CANARIES, at=now - 60)).status_code == 202


def _other_body(body: bytes) -> bytes:
    payload = orjson.loads(body)
    return orjson.dumps({**payload, "injected": "by someone without the secret"})


@pytest.mark.parametrize("source", ["transactions", "stripe", "chapa", "bookings"])
def test_a_valid_signature_on_a_different_body_is_refused(hostile: Hostile, source: str) -> None:
    key = f"swap-{time.time_ns()}"
    delivery = {"transactions": webhooks.transaction(key), "stripe": webhooks.stripe(key),
                "chapa": webhooks.chapa(key),
                "bookings": webhooks.booking(f"BK-{key}", "swap@example.com")}[source]
    captured = delivery.headers(CANARIES)
    answer = hostile.pipeline.http.post(
        f"{hostile.pipeline.ingest_url}/v1/webhooks/{source}", data=_other_body(delivery.body),
        headers=captured, timeout=30)
    refused(answer)
    assert hostile.post(delivery, captured).status_code == 202  # the genuine one still passes


def test_a_forged_chapa_delivery_with_the_secret_only_signature_is_refused(
        hostile: Hostile) -> None:
    """The secret-only `chapa-signature` is the same on every delivery: seen once, it would
    carry any body. Only a signature over the body is taken."""
    key = CANARIES.chapa.encode()
    seen = {"Content-Type": "application/json",
            "chapa-signature": hmac.new(key, key, hashlib.sha256).hexdigest()}
    forged = webhooks.chapa(f"forged-{time.time_ns()}")
    refused(hostile.post(forged, seen))


def test_a_chapa_signature_mode_delivery_signs_its_body_in_chapa_signature(
        hostile: Hostile) -> None:
    delivery = webhooks.chapa(f"signature-mode-{time.time_ns()}")
    body_signed = hmac.new(CANARIES.chapa.encode(), delivery.body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "chapa-signature": body_signed}
    assert hostile.post(delivery, headers).status_code == 202
    refused(hostile.pipeline.http.post(
        f"{hostile.pipeline.ingest_url}/v1/webhooks/chapa", data=_other_body(delivery.body),
        headers=headers, timeout=30))


def test_a_v1a_only_booking_is_refused_where_no_public_key_is_set(hostile: Hostile) -> None:
    delivery = webhooks.booking(f"BK-V1A-{time.time_ns()}", "v1a@example.com")
    now = int(time.time())
    seed = hashlib.sha256(b"a key hookline was never given").digest()
    headers = {"Content-Type": "application/json", "webhook-id": delivery.msg_id,
               "webhook-timestamp": str(now),
               "webhook-signature": sign_standard_webhooks_v1a(seed, delivery.msg_id, now,
                                                               delivery.body)}
    refused(hostile.post(delivery, headers))


# -- timing ------------------------------------------------------------------------------------

ROUNDS, CALLS = 61, 100
THRESHOLD = 0.25  # relative difference: generous, the early exit below shows far more


def relative_gap(check: Callable[[bytes], object], wrong: bytes, almost: bytes) -> float:
    """The relative difference in time between checking the two, the smallest of three
    measurements: other work on the machine adds noise, never a steady difference."""
    return min(_measured_gap(check, wrong, almost) for _ in range(3))


def _measured_gap(check: Callable[[bytes], object], wrong: bytes, almost: bytes) -> float:
    """Each timed by its fastest rounds, interleaved: other work only slows a round down."""
    timings: dict[bytes, list[float]] = {wrong: [], almost: []}
    for round_ in range(ROUNDS):
        for given in ((wrong, almost) if round_ % 2 else (almost, wrong)):
            started = time.perf_counter_ns()
            for _ in range(CALLS):
                check(given)
            timings[given].append(time.perf_counter_ns() - started)
    a, b = (statistics.quantiles(timings[given], n=10)[0] for given in (wrong, almost))
    return abs(a - b) / min(a, b)


def _rejects(verify: Callable[[bytes], None]) -> Callable[[bytes], object]:
    def check(given: bytes) -> object:
        try:
            verify(given)
        except InvalidSignature:
            return False
        return True
    return check


def _early_exit_equal(a: bytes, b: bytes) -> bool:
    """What a naive comparison does: stop at the first difference."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):  # noqa: SIM110 - the early exit is the point
        if x != y:
            return False
    return True


def _near_misses(right: bytes, alphabet: bytes) -> tuple[bytes, bytes]:
    """(every character wrong, only the last one wrong), both in `alphabet`."""
    other = {c: alphabet[(alphabet.index(c) + 1) % len(alphabet)] for c in alphabet}
    return bytes(other[c] for c in right), right[:-1] + bytes([other[right[-1]]])


HEX = b"0123456789abcdef"
B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def test_the_timing_method_sees_an_early_exit_comparison() -> None:
    right = hashlib.sha256(b"x").hexdigest().encode() * 4
    wrong, almost = _near_misses(right, HEX)
    assert relative_gap(lambda given: _early_exit_equal(right, given), wrong, almost) > THRESHOLD


def test_stripe_signature_checks_take_as_long_however_much_of_the_signature_is_right() -> None:
    body, now = b'{"id":"evt_timing"}', int(time.time())
    verifier = StripeVerifier([CANARIES.stripe])
    right = sign_stripe(CANARIES.stripe, now, body).partition("v1=")[2].encode()
    wrong, almost = _near_misses(right, HEX)
    check = _rejects(lambda given: verifier.verify(f"t={now},v1={given.decode()}", body, now))
    assert relative_gap(check, wrong, almost) < THRESHOLD


def test_standard_webhooks_checks_take_as_long_however_much_of_the_signature_is_right() -> None:
    body, now, msg_id = b'{"transaction_id":"t"}', int(time.time()), "msg_timing"
    verifier = StandardWebhooksVerifier([CANARIES.transactions])
    right = webhooks.signed("transactions", CANARIES, body, msg_id, now)["webhook-signature"]
    digest = base64.b64decode(right.removeprefix("v1,"))
    wrong = bytes(b ^ 0xFF for b in digest)
    almost = digest[:-1] + bytes([digest[-1] ^ 0x01])

    def verify(given: bytes) -> None:
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(now),
                   "webhook-signature": "v1," + base64.b64encode(given).decode()}
        verifier.verify(headers, body, now)
    assert relative_gap(_rejects(verify), wrong, almost) < THRESHOLD


def test_chapa_signature_checks_take_as_long_however_much_of_the_signature_is_right() -> None:
    body = b'{"tx_ref":"timing"}'
    verifier = ChapaVerifier([CANARIES.chapa])
    right = hmac.new(CANARIES.chapa.encode(), body, hashlib.sha256).hexdigest().encode()
    wrong, almost = _near_misses(right, HEX)
    check = _rejects(lambda given: verifier.verify({"x-chapa-signature": given.decode()}, body))
    assert relative_gap(check, wrong, almost) < THRESHOLD


def test_operator_token_checks_take_as_long_however_much_of_the_token_is_right() -> None:
    tokens = [OperatorToken("timing", "operator", TOKEN)]
    alphabet = bytes(sorted(set(TOKEN.encode()) | set(B64)))
    wrong, almost = _near_misses(TOKEN.encode(), alphabet)
    check = lambda given: _token_of(f"Bearer {given.decode()}", tokens)  # noqa: E731
    assert relative_gap(check, wrong, almost) < THRESHOLD


# -- the source ---------------------------------------------------------------------------------

SECRET_NAMES = re.compile(r"secret|token|signature|digest|hmac|expected|candidate", re.I)
EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def secret_comparisons(path: Path) -> list[str]:
    """Comparisons with == / != / in between two computed values, one named like a secret."""
    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, EQUALITY)
                                                        for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        computed = [o for o in operands if not isinstance(o, ast.Constant)]
        text = ast.get_source_segment(source, node) or ""
        if len(computed) >= 2 and SECRET_NAMES.search(text):
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{where}:{node.lineno}: {text}")
    return found


def test_every_secret_or_token_comparison_uses_compare_digest() -> None:
    files = [*sorted((ROOT / "hookline" / "senders").glob("*.py")),
             *sorted((ROOT / "hookline" / "web").glob("*.py"))]
    assert len(files) > 10
    assert [line for path in files for line in secret_comparisons(path)] == []
    for path in (ROOT / "hookline/senders/signatures.py", ROOT / "hookline/web/api.py"):
        assert "hmac.compare_digest(" in path.read_text(), f"{path.name} compares otherwise"


def test_the_source_check_finds_a_plain_comparison(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def ok(expected, signature):\n    return expected == signature\n")
    assert len(secret_comparisons(sample)) == 1
