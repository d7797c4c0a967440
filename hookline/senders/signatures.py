"""Signature verification for Standard Webhooks (HMAC and ed25519), Stripe and Chapa; pure,
no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence

from cryptography.exceptions import InvalidSignature as CryptographyInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_WHSEC_PREFIX = "whsec_"
_WHPK_PREFIX = "whpk_"
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")  # DER SubjectPublicKeyInfo prefix
_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")
_MAX_V1A = 8  # a sender signs with a key or two; bounds the work a long header can ask for
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


def _required_header(headers: Mapping[str, str], name: str, ascii_only: bool = True) -> str:
    value = headers.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidSignature(f"missing {name} header")
    if ascii_only and not value.isascii():
        raise InvalidSignature(f"malformed {name} header")
    return value


def _decode_base64(text: str) -> bytes | None:
    if len(text) % 4 or not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return None


def _padded(text: str) -> str:
    # Unpadded base64 keys are common; pad them as the reference libraries do.
    return text + "=" * (-len(text) % 4)


def _standard_key(secret: str, position: int) -> bytes:
    key = _decode_base64(_padded(secret.removeprefix(_WHSEC_PREFIX)))
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


def _public_key(text: str, position: int) -> Ed25519PublicKey:
    raw = _decode_base64(_padded(text.removeprefix(_WHPK_PREFIX)))
    if raw is not None and len(raw) == len(_ED25519_SPKI) + 32 and raw.startswith(_ED25519_SPKI):
        raw = raw[len(_ED25519_SPKI):]  # the DER form some senders publish
    if raw is None or len(raw) != 32:
        raise ValueError(f"public key #{position} is not a base64 ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def _standard_header(headers: Mapping[str, str], name: str, ascii_only: bool = True) -> str:
    # As the svix library: svix-* when sent, else webhook-*; senders use either set of names.
    svix = headers.get(f"svix-{name}")
    chosen = f"webhook-{name}" if svix is None else f"svix-{name}"
    return _required_header(headers, chosen, ascii_only)


def _standard_signatures(header: str) -> tuple[list[bytes], list[bytes]]:
    """The v1 entries as sent (compared as text, as the reference libraries do) and the
    decoded v1a entries; entries of other versions, or that cannot be one, are skipped."""
    symmetric: list[bytes] = []
    asymmetric: list[bytes] = []
    for entry in _WHITESPACE.split(header):
        if not entry.isascii():
            continue  # cannot be a signature
        version, _, signature = entry.partition(",")
        if version == "v1":
            symmetric.append(signature.encode("ascii"))
        elif version == "v1a" and len(asymmetric) < _MAX_V1A:
            decoded = _decode_base64(signature)
            if decoded is not None and len(decoded) == 64:
                asymmetric.append(decoded)
    return symmetric, asymmetric


class StandardWebhooksVerifier:
    """Verifies Standard Webhooks headers (`webhook-*` or `svix-*`): `v1` (HMAC) signatures
    with any of several secrets, `v1a` (ed25519) with any of several public keys."""

    def __init__(self, secrets: Sequence[str], tolerance: int = 300,
                 public_keys: Sequence[str] = ()) -> None:
        if isinstance(public_keys, str):
            raise TypeError("public_keys must be a sequence of strings, not a single string")
        self._keys = _keys(secrets, _standard_key) if secrets or not public_keys else ()
        self._public_keys = tuple(
            _public_key(key, position) for position, key in enumerate(public_keys, 1))
        self._tolerance = tolerance

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """Return the message id (the idempotency key) of an authentic, fresh message."""
        msg_id = _standard_header(headers, "id")
        if not _MESSAGE_ID.fullmatch(msg_id):
            raise InvalidSignature("malformed webhook-id header")
        timestamp = _parse_timestamp(_standard_header(headers, "timestamp"), "webhook-timestamp")
        symmetric, asymmetric = _standard_signatures(
            _standard_header(headers, "signature", ascii_only=False))
        _check_fresh(timestamp, now, self._tolerance)
        content = f"{msg_id}.{timestamp}.".encode("ascii") + body
        expected = [base64.b64encode(_hmac_sha256(key, content)) for key in self._keys]
        # both always checked: the time taken does not tell which kind matched
        signed = _matches_any(expected, symmetric)
        signed |= self._signed_by_a_public_key(content, asymmetric)
        if not signed:
            raise InvalidSignature("no webhook-signature matches")
        return msg_id

    def _signed_by_a_public_key(self, content: bytes, signatures: list[bytes]) -> bool:
        found = False
        for key in self._public_keys:
            for signature in signatures:
                try:
                    key.verify(signature, content)
                    found = True
                except CryptographyInvalidSignature:
                    pass
        return found


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return a `v1,<base64>` webhook-signature entry, as a Standard Webhooks sender would."""
    key = _standard_key(secret, 1)
    digest = _hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_standard_webhooks_v1a(seed: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return a `v1a,<base64>` entry signed with the ed25519 private key of this 32-byte seed."""
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(
        f"{msg_id}.{timestamp}.".encode() + body)
    return "v1a," + base64.b64encode(signature).decode("ascii")


def _parse_stripe_header(header: str) -> tuple[int, list[bytes]]:
    """As stripe-python reads it: items split on ",", each on at most two "=" (what follows a
    second "=" is dropped); only `t` and `v1` read, any other item ignored. A v1 value that
    cannot be a signature (not hex, not ASCII) matches nothing and spoils nothing."""
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in header.split(","):
        scheme, separator, rest = item.partition("=")
        if scheme not in ("t", "v1"):
            continue
        if not separator:
            raise InvalidSignature("malformed Stripe-Signature header")
        value = rest.partition("=")[0]
        if scheme == "t":
            timestamps.append(value)
        elif value.isascii():
            signatures.append(value.encode("ascii"))
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
