"""The operators' JSON API: bearer tokens, projections read from PostgreSQL, OpenAPI 3."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import orjson
import sqlalchemy
from flask import Flask, Response, abort, request
from flask.json.provider import JSONProvider
from flask_smorest import Api, Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy.engine import Engine
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest
from werkzeug.routing import PathConverter

from hookline.config import Settings
from hookline.log.topology import read_log_ends
from hookline.readside import queries
from hookline.senders.base import Interpreter
from hookline.senders.registry import SOURCES, interpreters
from hookline.web.http import (
    install_request_ids,
    json_response,
    metrics_view,
    register_error_handlers,
)

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
MAX_BIGINT = 2**63 - 1
F = TypeVar("F", bound=Callable[..., Any])


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


class PageArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class TransactionFilters(PageArgs):
    status = OneOf(queries.TRANSACTION_STATUSES)
    source = OneOf(SOURCES)
    booking_reference = Text()
    created_after = Moment(metadata={"description": "inclusive"})
    created_before = Moment(metadata={"description": "exclusive"})
    flag = OneOf(queries.TRANSACTION_FLAGS)
    cursor = Cursor(queries.TRANSACTIONS)


class TransactionSource(Schema):
    source = OneOf(SOURCES, metadata={"description": "the source whose transaction to show"})


class BookingFilters(PageArgs):
    status = OneOf(queries.BOOKING_STATUSES)
    customer_email = Text()
    flag = OneOf(queries.BOOKING_FLAGS)
    created_after = Moment(metadata={"description": "inclusive"})
    created_before = Moment(metadata={"description": "exclusive"})
    cursor = Cursor(queries.BOOKINGS)


def Partition(partitions: int, **kwargs: Any) -> fields.Integer:  # noqa: N802
    return fields.Integer(validate=validate.Range(min=0, max=partitions - 1), metadata={
        "description": f"a partition of the log, 0 to {partitions - 1} (HOOKLINE_PARTITIONS)"},
        **kwargs)


class EventFilters(PageArgs):
    """With a `partition` filter added per application (its range is the log's)."""

    source = OneOf([*SOURCES, "unknown"])
    type = Text()
    subject = Text()
    outcome = OneOf(queries.OUTCOMES)
    received_after = Moment(metadata={"description": "inclusive"})
    received_before = Moment(metadata={"description": "exclusive"})
    cursor = Cursor(queries.EVENTS)


class OutboxFilters(PageArgs):
    status = OneOf(queries.OUTBOX_STATUSES)
    template = OneOf(queries.TEMPLATES)
    cursor = Cursor(queries.OUTBOX)


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


# --- the application --------------------------------------------------------------------------


class _AnyId(PathConverter):
    """A provider's id as given: any characters, slashes anywhere (a path must not start
    with one)."""

    regex = ".+?"
    part_isolating = False  # matched across slashes (werkzeug guesses from the regex)


class _Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400  # a bad argument is the caller's error, as in every list
    # a misspelt filter is refused, not silently ignored
    DEFAULT_UNKNOWN_BY_LOCATION = {  # noqa: RUF012 - webargs declares it so
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}

    def handle_error(self, error: ValidationError, req: Any, schema: Schema, *,
                     error_status_code: int | None, error_headers: Any) -> NoReturn:
        refused = BadRequest("the arguments are invalid; each one is named under fields")
        refused.data = {"messages": error.messages}  # type: ignore[attr-defined]
        raise refused


class _Blueprint(Blueprint):  # type: ignore[misc]
    ARGUMENTS_PARSER = _Parser()


class _Api(Api):  # type: ignore[misc]
    ERROR_SCHEMA = ErrorOut


class _OrjsonProvider(JSONProvider):
    """Exact payloads (a stored JSON text goes out as it is) and UTC times ending in Z."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def create_api(settings: Settings, engine: Engine) -> Flask:
    app = Flask(__name__)
    install_request_ids(app)
    app.json = _OrjsonProvider(app)
    app.config.update(
        API_TITLE="hookline operator API", API_VERSION="v1", OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1", OPENAPI_JSON_PATH="openapi.json",
    )
    api = _Api(app, spec_kwargs={"components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"}}}, "security": [{"bearer": []}]})
    api.register_field(Cursor, "string", None)
    app.url_map.converters["id"] = _AnyId
    tokens = [token.encode() for token in settings.operator_tokens]
    # a scraper's token reads /metrics and nothing else
    scrapers = tokens + [token.encode() for token in settings.metrics_tokens]

    @app.before_request
    def authenticate() -> Response | None:
        if request.path in PUBLIC_PATHS:
            return None
        allowed = scrapers if request.path == "/metrics" else tokens
        if not _token_valid(request.headers.get("Authorization", ""), allowed):
            return json_response(401, {"error": "unauthorized",
                                       "detail": "send a valid operator token as "
                                                 "'Authorization: Bearer <token>'"},
                                 headers={"WWW-Authenticate": "Bearer"})
        return None

    # one statement per transaction: a reader never holds a lock across statements
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    sources = interpreters()
    for blueprint in (_transactions_blueprint(reader, sources), _bookings_blueprint(reader),
                      _events_blueprint(reader, settings.partitions), _outbox_blueprint(reader),
                      _status_blueprint(settings, reader)):
        api.register_blueprint(blueprint)
    _health_routes(app, engine)
    app.add_url_rule("/metrics", "metrics", metrics_view)
    register_error_handlers(app)

    @app.errorhandler(sqlalchemy.exc.OperationalError)
    def database_down(exc: sqlalchemy.exc.OperationalError) -> Response:
        log.warning("database unavailable on %s %s: %s", request.method, request.path,
                    str(exc.orig).strip().splitlines()[0] if exc.orig else exc)
        return json_response(503, {"error": "database_unavailable",
                                   "detail": "PostgreSQL cannot be reached; try again"},
                             headers={"Retry-After": "5"})

    return app


def _token_valid(header: str, tokens: list[bytes]) -> bool:
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    candidate = given.strip().encode()
    # compare against every token, always, so timing does not reveal which one was close
    matches = [hmac.compare_digest(candidate, token) for token in tokens]
    return any(matches)


def _errors(blp: Blueprint, *codes: int) -> Callable[[F], F]:
    """Document the JSON errors an operation answers, besides 401 and 503 that all may (400
    for bad arguments is documented by `arguments`)."""
    def decorate(view: F) -> F:
        for code in (*codes, 401, 503):
            view = blp.alt_response(code, schema=ErrorOut,
                                    description=_ERROR_TEXT.get(code, "error"))(view)
        return view
    return decorate


_ERROR_TEXT = {400: "bad arguments, each named under fields", 401: "no valid operator token",
               404: "no such row", 409: "not in a state that allows it",
               503: "the database is unreachable"}


def _page(engine: Engine, listing: queries.Listing, args: dict[str, Any]) -> dict[str, Any]:
    limit, after = args.pop("limit"), args.pop("cursor", None)
    with engine.connect() as conn:
        found = queries.page(conn, listing, args, limit, after)
    cursor = None if found.next_key is None else encode_cursor(listing, found.next_key)
    return {"items": found.items, "next_cursor": cursor}


def _found(row: Mapping[str, Any] | None, what: str) -> Mapping[str, Any]:
    if row is None:
        abort(404, f"no {what}")
    return row


def _transactions_blueprint(engine: Engine, sources: Mapping[str, Interpreter]) -> Blueprint:
    blp = _Blueprint("transactions", __name__, url_prefix="/v1/transactions",
                     description="Payments and transfers")

    @blp.route("")
    @blp.arguments(TransactionFilters, location="query")
    @blp.response(200, TransactionPage)
    @_errors(blp)
    def list_transactions(args: dict[str, Any]) -> dict[str, Any]:
        """Transactions, newest first (created_at, then transaction_id, then source)."""
        return _page(engine, queries.TRANSACTIONS, args)

    # an id may hold any character a source allows, "/" (or %2F) included, even first
    @blp.route("/<id:transaction_id>", merge_slashes=False)
    @blp.arguments(TransactionSource, location="query")
    @blp.response(200, TransactionDetail)
    @blp.alt_response(409, schema=AmbiguousOut, description="several sources have this id: "
                      "each is a candidate; choose one with ?source=")
    @_errors(blp, 404)
    def get_transaction(args: dict[str, Any], transaction_id: str) -> Any:
        """One transaction with its event trail, oldest first; `source` chooses among sources
        that have the same id."""
        if "\x00" in transaction_id:
            abort(404, "no such transaction")
        try:
            with engine.connect() as conn:
                found = queries.transaction(conn, transaction_id, sources, args.get("source"))
        except queries.Ambiguous as exc:
            return json_response(409, {"error": "ambiguous", "detail": str(exc),
                                       "candidates": exc.candidates})
        return _found(found, f"transaction {transaction_id!r}")

    return blp


def _bookings_blueprint(engine: Engine) -> Blueprint:
    blp = _Blueprint("bookings", __name__, url_prefix="/v1/bookings",
                     description="Bookings, their payments and emails")

    @blp.route("")
    @blp.arguments(BookingFilters, location="query")
    @blp.response(200, BookingPage)
    @_errors(blp)
    def list_bookings(args: dict[str, Any]) -> dict[str, Any]:
        """Bookings, newest first (created_at, a booking not yet created first, reference)."""
        return _page(engine, queries.BOOKINGS, args)

    @blp.route("/<reference>")
    @blp.response(200, BookingDetail)
    @_errors(blp, 404)
    def get_booking(reference: str) -> Mapping[str, Any]:
        """One booking with its transactions, its emails and its event trail."""
        if "\x00" in reference:
            abort(404, "no such booking")
        with engine.connect() as conn:
            found = queries.booking(conn, reference)
        return _found(found, f"booking {reference!r}")

    return blp


def _events_blueprint(engine: Engine, partitions: int) -> Blueprint:
    blp = _Blueprint("events", __name__, url_prefix="/v1/events",
                     description="The log as projected: one row per offset of each partition")
    filters = type("EventFilters", (EventFilters,), {"partition": Partition(partitions)})
    where = Schema.from_dict({"partition": Partition(partitions, load_default=0)},
                             name="EventPartition")

    @blp.route("")
    @blp.arguments(filters, location="query")
    @blp.response(200, EventPage)
    @_errors(blp)
    def list_events(args: dict[str, Any]) -> dict[str, Any]:
        """Records, newest offset first, then the highest partition."""
        return _page(engine, queries.EVENTS, args)

    @blp.route(f"/<int(max={MAX_BIGINT}):offset>")
    @blp.arguments(where, location="query")
    @blp.response(200, EventDetail)
    @_errors(blp, 404)
    def get_event(args: dict[str, Any], offset: int) -> Mapping[str, Any]:
        """One record (of partition 0 unless `partition` is given) with its payload as
        received."""
        partition = args["partition"]
        named = f"record at offset {offset}" + (f" of partition {partition}"
                                               if partitions > 1 else "")
        with engine.connect() as conn:
            found = dict(_found(queries.event(conn, offset, partition), named))
        if found["payload"] is not None:
            found["payload"] = orjson.Fragment(found["payload"])  # the stored JSON, unparsed
        return found

    return blp


def _outbox_blueprint(engine: Engine) -> Blueprint:
    blp = _Blueprint("outbox", __name__, url_prefix="/v1/outbox",
                     description="Emails owed to customers")

    @blp.route("")
    @blp.arguments(OutboxFilters, location="query")
    @blp.response(200, EmailPage)
    @_errors(blp)
    def list_outbox(args: dict[str, Any]) -> dict[str, Any]:
        """Emails, newest first."""
        return _page(engine, queries.OUTBOX, args)

    @blp.route(f"/<int(max={MAX_BIGINT}):email_id>/retry", methods=["POST"])
    @blp.response(200, EmailOut)
    @_errors(blp, 404, 409)
    def retry(email_id: int) -> Mapping[str, Any]:
        """A dead or failed email goes back to pending, due now, its attempts counted anew."""
        try:
            with engine.connect() as conn:
                return queries.retry_email(conn, email_id)
        except queries.EmailMissing as exc:
            abort(404, str(exc))
        except queries.NotRetryable as exc:
            abort(409, str(exc))

    return blp


def _status_blueprint(settings: Settings, engine: Engine) -> Blueprint:
    blp = _Blueprint("status", __name__, url_prefix="/v1/status",
                     description="The log's end, consumers' lag, the outbox")

    @blp.route("")
    @blp.response(200, StatusOut)
    @_errors(blp)
    def get_status() -> dict[str, Any]:
        """The end offset of each of the log's streams, each consumer's checkpoint and lag,
        the outbox by status."""
        end = read_log_ends(settings)
        with engine.connect() as conn:
            return queries.status(conn, end)

    return blp


def _health_routes(app: Flask, engine: Engine) -> None:
    @app.get("/healthz")
    def alive() -> Response:
        return json_response(200, {"status": "alive"})

    @app.get("/readyz")
    def ready() -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        except sqlalchemy.exc.OperationalError:
            return json_response(503, {"error": "not_ready",
                                       "detail": "the database is unreachable"})
        return json_response(200, {"status": "ready", "database": "reachable"})
