"""The envelope: one record of the log, as JSON with the payload kept byte for byte."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from hookline.log.payloads import parse_exact

# encode() writes the payload last; header values are JSON strings, in which this cannot occur.
_PAYLOAD_KEY = b',"payload":'


# not frozen, for the projector's speed (hookline/domain/transactions.py); never changed once made
@dataclass(slots=True)
class Envelope:
    id: str
    source: str
    type: str
    subject: str
    received_at: datetime
    raw_payload: bytes
    parsed: Any = field(default=None, compare=False, repr=False)
    # False when ingress could not verify the sender (an unsigned delivery allowed by a
    # setting, or a signature that does not cover the body): such a record never confirms a
    # booking or moves a payment's state on its own
    trusted: bool = True

    def payload(self) -> Any:
        return self.parsed if self.parsed is not None else orjson.loads(self.raw_payload)

    def exact_payload(self) -> Any:
        """The payload with every non-integer number as an exact Decimal, never a float."""
        return exact_json(self.raw_payload)

    def encode(self) -> bytes:
        return encode(self.id, self.source, self.type, self.subject, self.received_at,
                      self.raw_payload, self.trusted)


def envelope_id(source: str, key: str) -> str:
    """A record's id: its source and the key that source gives the delivery, so that a
    delivery sent again gets the same id and is projected once."""
    return f"{source}:{key}"


def encode(id: str, source: str, type: str, subject: str, received_at: datetime,
           raw_payload: bytes, trusted: bool = True) -> bytes:
    """Serialise an envelope, splicing the already-valid JSON payload in as it was sent.
    `"trusted": false` is written only for an unverified sender: records without it are
    trusted, as every record written before the mark existed was verified or unsigned-allowed."""
    header: dict[str, Any] = {
        "id": id,
        "source": source,
        "type": type,
        "subject": subject,
        "received_at": received_at,
    }
    if not trusted:
        header["trusted"] = False
    header["payload"] = orjson.Fragment(raw_payload)
    return orjson.dumps(header, option=orjson.OPT_UTC_Z)


def exact_json(raw: bytes) -> Any:
    """JSON already known to be valid UTF-8 (checked on the way in), every non-integer number
    an exact Decimal; a ValueError for one ingress would have refused."""
    return parse_exact(raw)


def decode(body: bytes) -> Envelope:
    """Parse a record's header and keep its payload raw; ValueError when it is not a record."""
    split = body.find(_PAYLOAD_KEY)
    if split < 0 or not body.endswith(b"}"):
        raise ValueError("not an envelope: no payload")
    try:
        header = orjson.loads(body[:split] + b"}")
        raw_payload = body[split + len(_PAYLOAD_KEY):-1]
        return Envelope(
            id=_text(header["id"]),
            source=_text(header["source"]),
            type=_text(header["type"]),
            subject=_text(header["subject"]),
            received_at=datetime.fromisoformat(header["received_at"]),
            raw_payload=raw_payload,
            parsed=orjson.loads(raw_payload),  # a record whose payload is not JSON is not one
            trusted=_flag(header.get("trusted", True)),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not an envelope: {exc}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)
