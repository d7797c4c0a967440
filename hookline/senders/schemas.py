"""What the senders validated by a schema (transactions, bookings) share: the amount and
currency fields, and one way to turn a schema's complaints into field errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields

from hookline.domain.amounts import AmountInvalid, parse_amount
from hookline.domain.currencies import is_currency
from hookline.senders.base import PayloadInvalid


class Amount(fields.Field[Decimal]):
    """An amount by the rules of hookline.domain.amounts, from a JSON number or string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        try:
            return parse_amount(value)
        except AmountInvalid as exc:
            raise ValidationError(f"Not a valid amount: {exc}.") from None


class Currency(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs)
        if not is_currency(code):
            raise ValidationError("Not an ISO 4217 currency code.")
        return code


def validated(schema: Schema, data: Any, invalid: str, under: str | None = None
              ) -> dict[str, Any]:
    """`data` loaded by `schema`, unknown fields kept; else PayloadInvalid saying `invalid`,
    with the field errors (nested under `under` when given)."""
    try:
        return dict(schema.load(data, unknown="include"))
    except ValidationError as exc:
        messages = exc.messages  # a message about the whole body goes under _schema
        errors = dict(messages) if isinstance(messages, dict) else {"_schema": messages}
        raise PayloadInvalid(invalid, errors if under is None else {under: errors}) from None
