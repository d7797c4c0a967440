"""The operator API's arguments and responses as marshmallow schemas: what each route reads
from its query and what it answers, as the OpenAPI document describes them."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy
from marshmallow import Schema, ValidationError, fields, validate

from hookline.readside import audit, queries
from hookline.senders.registry import SOURCES

MAX_BIGINT = 2**63 - 1


# --- arguments --------------------------------------------------------------------------------


def _storable(value: str) -> None:
    if "\x00" in value:  # PostgreSQL text cannot hold it: no row can match
        raise ValidationError("Must not contain a NUL character.")


def Text(**kwargs: Any) -> fields.String:  # noqa: N802 - a field factory reads like a field
    return fields.String(validate=[validate.Length(min=1, max=255), _storable], **kwargs)


def OneOf(choices: Any, **kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=validate.OneOf(sorted(choices)), **kwargs)


def Moment(**kwargs: Any) -> fields.AwareDateTime:  # noqa: N802
    return fields.AwareDateTime(default_timezone=UTC, **kwargs)


class Cursor(fields.Field[tuple[Any, ...]]):
    """An opaque position in one list: urlsafe base64 of [list name, *key of the last row]."""

    PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")

    def __init__(self, listing: queries.Listing, **kwargs: Any) -> None:
        super().__init__(metadata={"description": "next_cursor of the previous page",
                                   "pattern": self.PATTERN.pattern}, **kwargs)
        self.listing = listing

    def _deserialize(self, value: Any, attr: str | None, data: Any,
                     **kwargs: Any) -> tuple[Any, ...]:
        if not isinstance(value, str) or not self.PATTERN.match(value):
            raise ValidationError(f"Not a cursor of the {self.listing.name} list.")
        text = value
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
            decoded = orjson.loads(raw)
            return self._key(decoded)
        except (ValueError, TypeError, binascii.Error):
            raise ValidationError(f"Not a cursor of the {self.listing.name} list.") from None

    def _key(self, decoded: Any) -> tuple[Any, ...]:
        columns = self.listing.key_columns()
        if not isinstance(decoded, list) or decoded[:1] != [self.listing.name] \
                or len(decoded) != len(columns) + 1:
            raise ValueError("not this list's cursor")
        return tuple(_key_value(column, value) for column, value in zip(columns, decoded[1:],
                                                                         strict=True))


def _int_max(column: sqlalchemy.Column[Any]) -> int:
    """The largest value the column holds: a bigger one would fail in PostgreSQL's cast."""
    if isinstance(column.type, sqlalchemy.SmallInteger):
        return 2**15 - 1
    if isinstance(column.type, sqlalchemy.BigInteger):
        return MAX_BIGINT
    return 2**31 - 1


def _key_value(column: sqlalchemy.Column[Any], value: Any) -> Any:
    if value is None and column.nullable:
        return None
    kind = column.type.python_type
    if kind is datetime and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has a zone")
        return moment
    if kind is int and type(value) is int and 0 <= value <= _int_max(column):
        return value
    if kind is str and isinstance(value, str) and "\x00" not in value:
        return value
    raise ValueError(f"a {column.name} of the wrong type")


def encode_cursor(listing: queries.Listing, key: tuple[Any, ...]) -> str:
    raw = orjson.dumps([listing.name, *key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def period(name: str) -> dict[str, fields.Field[Any]]:
    """`<name>_after` and `<name>_before`: a span of time that includes its start only."""
    return {f"{name}_after": Moment(metadata={"description": "inclusive"}),
            f"{name}_before": Moment(metadata={"description": "exclusive"})}


def list_arguments(name: str, listing: queries.Listing,
                   filters: dict[str, fields.Field[Any]]) -> type[Schema]:
    """A list's query: how many rows, the list's filters, and where the last page ended."""
    return Schema.from_dict({
        "limit": fields.Integer(load_default=50, validate=validate.Range(min=1, max=500)),
        **filters,
        "cursor": Cursor(listing),
    }, name=name)


TransactionFilters = list_arguments("TransactionFilters", queries.TRANSACTIONS, {
    "status": OneOf(queries.TRANSACTION_STATUSES),
    "source": OneOf(SOURCES),
    "booking_reference": Text(),
    **period("created"),
    "flag": OneOf(queries.TRANSACTION_FLAGS),
})


class TransactionSource(Schema):
    source = OneOf(SOURCES, metadata={"description": "the source whose transaction to show"})


BookingFilters = list_arguments("BookingFilters", queries.BOOKINGS, {
    "status": OneOf(queries.BOOKING_STATUSES),
    "customer_email": Text(),
    "flag": OneOf(queries.BOOKING_FLAGS),
    **period("created"),
})
OutboxFilters = list_arguments("OutboxFilters", queries.OUTBOX, {
    "status": OneOf(queries.OUTBOX_STATUSES),
    "template": OneOf(queries.TEMPLATES),
})
_EventFilters = list_arguments("EventFilters", queries.EVENTS, {
    "source": OneOf([*SOURCES, "unknown"]),
    "type": Text(),
    "subject": Text(),
    "outcome": OneOf(queries.OUTCOMES),
    **period("received"),
    "q": fields.String(validate=[
        validate.Length(min=queries.SEARCH_MIN_LENGTH, max=255), _storable], metadata={
        "description": "text the payload contains (an email, a reference, an amount), any case"}),
})


AuditFilters = list_arguments("AuditFilters", audit.AUDIT, {
    "actor": Text(metadata={"description": "a token's name, or cli:<OS user>"}),
    "action": Text(metadata={"description": "such as outbox.retry"}),
    "outcome": OneOf(audit.OUTCOMES),
    **period("at"),
})


def Partition(partitions: int, **kwargs: Any) -> fields.Integer:  # noqa: N802
    return fields.Integer(validate=validate.Range(min=0, max=partitions - 1), metadata={
        "description": f"a partition of the log, 0 to {partitions - 1} (HOOKLINE_PARTITIONS)"},
        **kwargs)


def event_filters(partitions: int) -> type[Schema]:
    """The events' filters and `partition`, whose range is the log's (so one per app)."""
    return _EventFilters.from_dict({"partition": Partition(partitions)}, name="EventFilters")


def event_partition(partitions: int) -> type[Schema]:
    """Which partition's record to show: partition 0 unless given."""
    return Schema.from_dict({"partition": Partition(partitions, load_default=0)},
                            name="EventPartition")


# --- responses --------------------------------------------------------------------------------


def Amount() -> fields.String:  # noqa: N802
    return fields.String(required=True, allow_none=True,
                         metadata={"description": "exact decimal, the currency's places"})


def Nullable(field: type[fields.Field[Any]], **kwargs: Any) -> fields.Field[Any]:  # noqa: N802
    return field(required=True, allow_none=True, **kwargs)


def Always(field: type[fields.Field[Any]], **kwargs: Any) -> fields.Field[Any]:  # noqa: N802
    return field(required=True, **kwargs)


class ErrorOut(Schema):
    error = fields.String(required=True)
    detail = fields.String(required=True)
    field_errors = fields.Dict(data_key="fields",
                               metadata={"description": "the arguments' errors, by location"})


class TransactionOut(Schema):
    transaction_id = Always(fields.String)
    source = Always(fields.String)
    source_account = Nullable(fields.String)
    destination_account = Nullable(fields.String)
    provider_reference = Nullable(fields.String)
    amount = Amount()
    currency = Nullable(fields.String)
    status = Always(fields.String)
    failure_reason = Nullable(fields.String)
    refunded_amount = Amount()
    disputed = Always(fields.Boolean)
    booking_reference = Nullable(fields.String)
    created_at = Always(fields.DateTime)
    processed_at = Always(fields.DateTime)
    updated_at = Always(fields.DateTime)
    last_offset = Always(fields.Integer)
    trusted = Always(fields.Boolean, metadata={
        "description": "false while every report of this payment came from a sender that "
                       "could not be verified: it confirms no booking"})


class CandidateOut(Schema):
    transaction_id = Always(fields.String)
    source = Always(fields.String)
    status = Always(fields.String)


class AmbiguousOut(ErrorOut):
    candidates = fields.List(fields.Nested(CandidateOut), required=True)


class EventOut(Schema):
    offset = Always(fields.Integer, metadata={"description": "in its partition's stream"})
    partition = Always(fields.Integer)
    id = Always(fields.String)
    source = Always(fields.String)
    type = Always(fields.String)
    subject = Always(fields.String)
    received_at = Always(fields.DateTime)
    projected_at = Always(fields.DateTime)
    outcome = Always(fields.String)
    error = Nullable(fields.String)


class EventDetail(EventOut):
    payload = fields.Raw(required=True, allow_none=True,
                         metadata={"description": "the payload as received (stored as JSON)"})


class EmailOut(Schema):
    id = Always(fields.Integer)
    event_id = Always(fields.String)
    template = Always(fields.String)
    booking_reference = Nullable(fields.String)
    recipient = Always(fields.String)
    subject = Nullable(fields.String)
    status = Always(fields.String)
    attempts = Always(fields.Integer)
    next_attempt_at = Always(fields.DateTime)
    last_attempt_at = Nullable(fields.DateTime)
    last_error = Nullable(fields.String)
    sent_at = Nullable(fields.DateTime)
    created_at = Always(fields.DateTime)


class BookingOut(Schema):
    reference = Always(fields.String)
    status = Always(fields.String)
    customer_email = Nullable(fields.String)
    customer_name = Nullable(fields.String)
    destination = Nullable(fields.String)
    travel_date = Nullable(fields.Date)
    return_date = Nullable(fields.Date)
    travelers = Nullable(fields.Integer)
    total_amount = Amount()
    currency = Nullable(fields.String)
    created_at = Nullable(fields.DateTime)
    expires_at = Nullable(fields.DateTime)
    confirmed_at = Nullable(fields.DateTime)
    cancelled_at = Nullable(fields.DateTime)
    cancel_reason = Nullable(fields.String)
    late_payment = Always(fields.Boolean)
    amount_mismatch = Always(fields.Boolean)
    updated_at = Always(fields.DateTime)
    last_offset = Always(fields.Integer)


class TransactionDetail(TransactionOut):
    events = fields.List(fields.Nested(EventOut), required=True)


class BookingDetail(BookingOut):
    transactions = fields.List(fields.Nested(TransactionOut), required=True)
    emails = fields.List(fields.Nested(EmailOut), required=True)
    events = fields.List(fields.Nested(EventOut), required=True)


def _page_schema(name: str, item: type[Schema]) -> type[Schema]:
    return Schema.from_dict({
        "items": fields.List(fields.Nested(item), required=True),
        "next_cursor": fields.String(required=True, allow_none=True,
                                     metadata={"description": "null on the last page"}),
    }, name=name)


TransactionPage = _page_schema("TransactionPage", TransactionOut)
BookingPage = _page_schema("BookingPage", BookingOut)
EventPage = _page_schema("EventPage", EventOut)
EmailPage = _page_schema("EmailPage", EmailOut)


class LogOut(Schema):
    stream = Always(fields.String, metadata={"description": "HOOKLINE_STREAM"})
    end_offset = Nullable(fields.Integer, metadata={
        "description": "-1 when the log is empty; null when it cannot be read (see error) or "
                       "when it has several partitions (see partitions)"})
    error = Nullable(fields.String, metadata={"description": "why a stream cannot be read"})


class PartitionOut(Schema):
    partition = Always(fields.Integer)
    stream = Always(fields.String, metadata={"description": "the partition's stream"})
    end_offset = Nullable(fields.Integer, metadata={
        "description": "-1 when the stream is empty, null when it cannot be read"})
    error = Nullable(fields.String)
    consumer = Always(fields.String, metadata={
        "description": "the projector's checkpoint whose lag is measured against this end"})


class ConsumerOut(Schema):
    consumer = Always(fields.String)
    checkpoint = Always(fields.Integer)
    lag = Nullable(fields.Integer, metadata={
        "description": "behind the end of its own partition's stream; null when that end "
                       "cannot be read or the consumer is no partition's projector"})


class OutboxStatusOut(Schema):
    counts = Always(fields.Dict, keys=fields.String(), values=fields.Integer())
    oldest_pending_age_seconds = Nullable(fields.Float)


class StatusOut(Schema):
    log = Always(fields.Nested, nested=LogOut)
    partitions = Always(fields.List, cls_or_instance=fields.Nested(PartitionOut),
                        metadata={"description": "each stream of the log, partition 0 first"})
    consumers = Always(fields.List, cls_or_instance=fields.Nested(ConsumerOut))
    outbox = Always(fields.Nested, nested=OutboxStatusOut)


class AuditOut(Schema):
    id = Always(fields.Integer)
    at = Always(fields.DateTime)
    actor = Always(fields.String, metadata={"description": "a token's name or cli:<OS user>"})
    action = Always(fields.String)
    targets = fields.List(fields.String(), required=True, metadata={
        "description": "the records acted on, such as outbox:17 or events:0:42"})
    detail = Always(fields.Dict)
    outcome = Always(fields.String, metadata={"description": "succeeded, refused or failed"})


AuditPage = _page_schema("AuditPage", AuditOut)


# --- reprocess --------------------------------------------------------------------------------


def reprocess_arguments(partitions: int) -> type[Schema]:
    """POST /v1/reprocess: records by offset, or a filter of the events rows; and dry_run."""
    record = Schema.from_dict({
        "partition": Partition(partitions, load_default=0),
        "offset": fields.Integer(required=True, validate=validate.Range(min=0, max=MAX_BIGINT)),
    }, name="ReprocessRecord")
    return Schema.from_dict({
        "records": fields.List(fields.Nested(record), validate=validate.Length(min=1, max=10_000),
                               metadata={"description": "the records to project again"}),
        "source": OneOf([*SOURCES, "unknown"]),
        "type": Text(),
        "outcome": OneOf(queries.OUTCOMES),
        **period("received"),
        "dry_run": fields.Boolean(load_default=False, metadata={
            "description": "report what would change, change nothing"}),
    }, name="ReprocessIn")


class RecordChangeOut(Schema):
    partition = Always(fields.Integer)
    offset = Always(fields.Integer)
    before = Always(fields.String, metadata={"description": "the outcome before"})
    after = Always(fields.String, metadata={"description": "the outcome now"})
    error = Nullable(fields.String, metadata={"description": "why, when rejected or ignored"})


class RowChangeOut(Schema):
    table = Always(fields.String)
    key = Always(fields.String)
    before = Nullable(fields.Dict, metadata={"description": "the columns that change; null for "
                                                            "a new row"})
    after = Always(fields.Dict)


class EmailOwedOut(Schema):
    event_id = Always(fields.String)
    template = Always(fields.String)
    recipient = Always(fields.String)


class ReprocessOut(Schema):
    dry_run = Always(fields.Boolean)
    selected = Always(fields.Integer, metadata={"description": "records the selection names"})
    skipped = Always(fields.Integer, metadata={
        "description": "of them, applied or duplicate: their effects are already projected"})
    operator_rejected = Always(fields.Integer, metadata={
        "description": "left out of a filter: rejected by an operator (choose them by offset)"})
    reprocessed = Always(fields.Integer)
    changed = Always(fields.Integer, metadata={"description": "reprocessed with a new outcome"})
    unchanged = Always(fields.Integer)
    still_rejected = Always(fields.Integer)
    emails_enqueued = Always(fields.Integer)
    outcomes = Always(fields.Dict, keys=fields.String(), values=fields.Integer())
    rows_changed = Always(fields.Dict, keys=fields.String(), values=fields.Integer(),
                          metadata={"description": "by table; a dry run only"})
    records = Always(fields.List, cls_or_instance=fields.Nested(RecordChangeOut),
                     metadata={"description": "the first 100 whose outcome changed"})
    rows = Always(fields.List, cls_or_instance=fields.Nested(RowChangeOut),
                  metadata={"description": "a dry run's first 100 changed rows"})
    emails = Always(fields.List, cls_or_instance=fields.Nested(EmailOwedOut),
                    metadata={"description": "the first 100 emails enqueued"})
