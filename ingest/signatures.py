"""Signature verification for Standard Webhooks, Stripe and Chapa; pure, no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence

_WHSEC_PREFIX = "whsec_"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# Canonical digits only, so the signed text is exactly str(int(text)); 12 digits bound the work.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_MESSAGE_ID = re.compile(r"[\x21-\x7e]+")


class InvalidSignature(Exception):
    """The request cannot be shown to come from the provider; str() is safe to log."""


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _hex_hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii")


def _matches_any(expected: Sequence[bytes], given: Sequence[bytes]) -> bool:
    # No short-circuit: the time taken does not reveal which candidate matched.
    found = False
    for candidate in expected:
        for signature in given:
            found |= hmac.compare_digest(candidate, signature)
    return found


def _check_fresh(timestamp: int, now: float | None, tolerance: int) -> None:
    current = time.time() if now is None else now
    # Written as `not <=` so a NaN clock fails closed.
    if not abs(current - timestamp) <= tolerance:
        raise InvalidSignature("timestamp is outside the tolerance window")


def _parse_timestamp(text: str, header: str) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise InvalidSignature(f"malformed timestamp in {header} header")
    return int(text)


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidSignature(f"missing {name} header")
    if not value.isascii():
        raise InvalidSignature(f"malformed {name} header")
    return value


def _decode_base64(text: str) -> bytes | None:
    if len(text) % 4 or not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return None


def _standard_key(secret: str, position: int) -> bytes:
    text = secret.removeprefix(_WHSEC_PREFIX)
    # Unpadded secrets are common; pad them as the reference libraries do.
    key = _decode_base64(text + "=" * (-len(text) % 4))
    if key is None:
        raise ValueError(f"secret #{position} is not valid base64")
    if not key:
        raise ValueError(f"secret #{position} is empty")
    return key


def _utf8_key(secret: str, position: int) -> bytes:
    if not secret.strip():
        raise ValueError(f"secret #{position} is empty")
    try:
        return secret.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"secret #{position} is not valid UTF-8") from None


def _keys(secrets: Sequence[str], decode: Callable[[str, int], bytes]) -> tuple[bytes, ...]:
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of strings, not a single string")
    if not secrets:
        raise ValueError("at least one secret is required")
    return tuple(decode(secret, position) for position, secret in enumerate(secrets, 1))


def _standard_signatures(header: str) -> list[bytes]:
    found: list[bytes] = []
    for entry in header.split(" "):
        version, _, signature = entry.partition(",")
        if not version or not signature or "," in signature:
            raise InvalidSignature("malformed webhook-signature header")
        if version == "v1":
            found.append(_standard_signature(signature))
    if not found:
        raise InvalidSignature("webhook-signature header has no v1 signature")
    return found


def _standard_signature(text: str) -> bytes:
    decoded = _decode_base64(text)
    if decoded is None:
        raise InvalidSignature("malformed base64 in webhook-signature header")
    return decoded


class StandardWebhooksVerifier:
    """Verifies `webhook-*` headers; any of several secrets may match, for rotation."""

    def __init__(self, secrets: Sequence[str], tolerance: int = 300) -> None:
        self._keys = _keys(secrets, _standard_key)
        self._tolerance = tolerance

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """Return the webhook-id (the idempotency key) of an authentic, fresh message."""
        msg_id = _required_header(headers, "webhook-id")
        if not _MESSAGE_ID.fullmatch(msg_id):
            raise InvalidSignature("malformed webhook-id header")
        timestamp_text = _required_header(headers, "webhook-timestamp")
        timestamp = _parse_timestamp(timestamp_text, "webhook-timestamp")
        signatures = _standard_signatures(_required_header(headers, "webhook-signature"))
        _check_fresh(timestamp, now, self._tolerance)
        content = f"{msg_id}.{timestamp}.".encode("ascii") + body
        expected = [_hmac_sha256(key, content) for key in self._keys]
        if not _matches_any(expected, signatures):
            raise InvalidSignature("no webhook-signature matches")
        return msg_id


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return a `v1,<base64>` webhook-signature entry, as a Standard Webhooks sender would."""
    key = _standard_key(secret, 1)
    digest = _hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def _stripe_signature(value: str) -> bytes:
    if not _HEX_SHA256.fullmatch(value):
        raise InvalidSignature("malformed v1 signature in Stripe-Signature header")
    return value.encode("ascii")


def _parse_stripe_header(header: str) -> tuple[int, list[bytes]]:
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in header.split(","):
        scheme, separator, value = item.partition("=")
        if not separator or not scheme:
            raise InvalidSignature("malformed Stripe-Signature header")
        if scheme == "t":
            timestamps.append(value)
        elif scheme == "v1":
            signatures.append(_stripe_signature(value))
    if len(timestamps) != 1:
        raise InvalidSignature("Stripe-Signature header needs exactly one timestamp")
    if not signatures:
        raise InvalidSignature("Stripe-Signature header has no v1 signature")
    return _parse_timestamp(timestamps[0], "Stripe-Signature"), signatures


class StripeVerifier:
    """Verifies the Stripe-Signature header; keys are the whole `whsec_...` strings."""

    def __init__(self, secrets: Sequence[str], tolerance: int = 300) -> None:
        self._keys = _keys(secrets, _utf8_key)
        self._tolerance = tolerance

    def verify(self, header: str | None, body: bytes, now: float | None = None) -> None:
        if not isinstance(header, str) or not header:
            raise InvalidSignature("missing Stripe-Signature header")
        if not header.isascii():
            raise InvalidSignature("malformed Stripe-Signature header")
        timestamp, signatures = _parse_stripe_header(header)
        _check_fresh(timestamp, now, self._tolerance)
        content = b"%d." % timestamp + body
        expected = [_hex_hmac_sha256(key, content) for key in self._keys]
        if not _matches_any(expected, signatures):
            raise InvalidSignature("no Stripe-Signature v1 signature matches")


def sign_stripe(secret: str, timestamp: int, body: bytes) -> str:
    """Return a full Stripe-Signature header value, as Stripe would send it."""
    signature = _hex_hmac_sha256(secret.encode("utf-8"), b"%d." % timestamp + body)
    return f"t={timestamp},v1={signature.decode('ascii')}"


def _chapa_signature(headers: Mapping[str, str], name: str) -> bytes | None:
    value = headers.get(name)
    if not isinstance(value, str) or not _HEX_SHA256.fullmatch(value):
        return None
    return value.encode("ascii")


class ChapaVerifier:
    """Accepts a delivery whose body is signed (`x-chapa-signature`, or `chapa-signature` in
    Chapa's Signature mode). `chapa-signature` outside that mode signs only the secret, the
    same on every delivery, so it proves nothing about the body: refused unless allowed."""

    def __init__(self, secrets: Sequence[str], allow_secret_only: bool = False) -> None:
        self._keys = _keys(secrets, _utf8_key)
        self._allow_secret_only = allow_secret_only
        self._secret_signatures = [_hex_hmac_sha256(key, key) for key in self._keys]

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        """True when a signature covers the body; False when only the secret-only form does,
        which happens only when it is allowed (the delivery is then to be kept untrusted)."""
        given = [signature for signature in (_chapa_signature(headers, "x-chapa-signature"),
                                             _chapa_signature(headers, "chapa-signature"))
                 if signature is not None]
        if not given:
            raise InvalidSignature("missing or malformed Chapa signature headers")
        expected = [_hex_hmac_sha256(key, body) for key in self._keys]
        body_signed = _matches_any(expected, given)
        secret_only = self._secret_only(_chapa_signature(headers, "chapa-signature"))
        if body_signed:
            return True
        if secret_only and self._allow_secret_only:
            return False
        if secret_only:
            raise InvalidSignature("chapa-signature signs only the secret, not the body; "
                                   "such deliveries are refused")
        raise InvalidSignature("no Chapa signature matches")

    def _secret_only(self, signature: bytes | None) -> bool:
        return signature is not None and _matches_any(self._secret_signatures, [signature])


def sign_chapa(secret: str, body: bytes) -> dict[str, str]:
    """Both Chapa signature headers for a body, as Chapa's Signature mode sends them."""
    signature = _hex_hmac_sha256(secret.encode("utf-8"), body).decode("ascii")
    return {"x-chapa-signature": signature, "chapa-signature": signature}
