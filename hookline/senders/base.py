"""What every source provides, and the strict JSON parsing they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from hookline.domain.amounts import AmountInvalid, parse_amount
from hookline.domain.events import DomainEvent, Rejected
from hookline.log import payloads
from hookline.log.envelope import Envelope

Headers = Mapping[str, str] | Any
T = TypeVar("T")
MAX_TEXT = 255  # an id or a reference longer than this is not one
REQUIRED = ["Missing data for required field."]  # marshmallow's wording, for hand-read fields


class PayloadInvalid(Exception):
    """The body is not JSON or fails validation; `errors` maps each field to its messages."""

    def __init__(self, message: str, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.errors: Mapping[str, Any] = errors or {}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What ingress extracts from a verified delivery to build its envelope."""

    key: str
    type: str
    subject: str
    trusted: bool = True  # False: the sender was not verified (see Envelope.trusted)


class Ingress(Protocol):
    """A source's ingress side: verify the signature, then validate and key the delivery."""

    def accept(self, headers: Headers, body: bytes) -> Delivery: ...


class Interpreter(Protocol):
    """A source's projection side: what a record of this source means."""

    def __call__(self, envelope: Envelope) -> list[DomainEvent]: ...


def parse_json(body: bytes) -> Any:
    """Parse as strictly as the projector re-reads and the event store keeps
    (hookline.log.payloads): what is accepted here can always be projected."""
    try:
        return payloads.parse(body)
    except payloads.PayloadRefused as refused:
        raise _invalid(refused) from None


def parse_object(body: bytes) -> dict[str, Any]:
    """The body parsed once, strictly, as the JSON object every sender sends."""
    return require_object(parse_json(body))


def exact_numbers(body: bytes, payload: dict[str, Any], values: Iterable[Any]) -> dict[str, Any]:
    """`payload`, read again with exact numbers only when one of `values` came as a float:
    orjson reads a non-integer, or an integer beyond 64 bits, as one, and an amount is exact."""
    if not any(isinstance(value, float) for value in values):
        return payload
    try:
        return require_object(payloads.parse_exact(body))
    except payloads.PayloadRefused as refused:
        raise _invalid(refused) from None


def _invalid(refused: payloads.PayloadRefused) -> PayloadInvalid:
    if not refused.path:
        return PayloadInvalid(f"the body {refused.message}")
    return PayloadInvalid(f"the body cannot be kept: {refused.field} {refused.message}",
                          {refused.field: [refused.message]})


def require_object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise PayloadInvalid("the body must be a JSON object",
                             {"_schema": ["Expected a JSON object."]})
    return payload


def text(value: Any) -> str | None:
    """`value` when it is a string with something in it, at most MAX_TEXT long; else None."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        return None
    return value


class Fields:
    """Typed reads from a record's payload for interpretation; Rejected names what is missing.

    Ingress has already validated each delivery in full; interpretation only checks the
    structure it reads, so projecting stays cheap and a malformed record is still rejected.
    """

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise Rejected(f"{where}: expected an object")
        self._data, self._where = data, where

    def text(self, name: str) -> str:
        value = self._data.get(name)
        if not isinstance(value, str) or not value:
            raise Rejected(f"{self._where}.{name}: expected a non-empty string")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self._data.get(name)
        return value if isinstance(value, str) and value else None

    def amount(self, name: str) -> Decimal:
        try:
            return parse_amount(self._data.get(name))
        except AmountInvalid as exc:
            raise Rejected(f"{self._where}.{name}: {exc}") from None

    def integer(self, name: str, minimum: int) -> int:
        value = self._data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise Rejected(f"{self._where}.{name}: expected a whole number from {minimum}")
        return value

    def nested(self, name: str) -> Fields:
        return Fields(self._data.get(name), f"{self._where}.{name}")

    def parsed(self, name: str, parse: Callable[[str], T], optional: bool = False) -> T | None:
        """A string field turned into a value by `parse` (a date, a time)."""
        if optional and self._data.get(name) is None:
            return None
        try:
            return parse(self.text(name))
        except ValueError:
            raise Rejected(f"{self._where}.{name}: not a valid value") from None
