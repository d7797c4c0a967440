"""The operators' JSON API: bearer tokens, projections read from PostgreSQL, OpenAPI 3."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import orjson
import sqlalchemy
from flask import Flask, Response, abort, g, request
from flask.json.provider import JSONProvider
from flask_smorest import Api, Blueprint
from marshmallow import RAISE, Schema, ValidationError
from sqlalchemy.engine import Engine
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest
from werkzeug.routing import PathConverter

from hookline.config import OperatorToken, Settings
from hookline.log.topology import read_log_ends
from hookline.projection import reprocess
from hookline.readside import queries
from hookline.readside.audit import AUDIT
from hookline.senders.base import Interpreter
from hookline.senders.registry import interpreters
from hookline.web.console import register_console
from hookline.web.console.session import PREFIX as CONSOLE
from hookline.web.http import (
    install_request_ids,
    json_response,
    metrics_view,
    register_error_handlers,
)
from hookline.web.operators import AUDIT_ENGINE, record_action, record_after, requires
from hookline.web.schemas import (
    MAX_BIGINT,
    AmbiguousOut,
    AuditFilters,
    AuditPage,
    BookingDetail,
    BookingFilters,
    BookingPage,
    Cursor,
    EmailOut,
    EmailPage,
    ErrorOut,
    EventDetail,
    EventPage,
    OutboxFilters,
    ReprocessOut,
    StatusOut,
    TransactionDetail,
    TransactionFilters,
    TransactionPage,
    TransactionSource,
    encode_cursor,
    event_filters,
    event_partition,
    reprocess_arguments,
)

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
F = TypeVar("F", bound=Callable[..., Any])


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
    operators = settings.operator_tokens
    # a scraper's token reads /metrics and nothing else
    scrapers = operators + tuple(OperatorToken(f"metrics-{k}", "viewer", token)
                                 for k, token in enumerate(settings.metrics_tokens, 1))
    app.extensions[AUDIT_ENGINE] = engine

    @app.before_request
    def authenticate() -> Response | None:
        if request.path in PUBLIC_PATHS or _console(request.path):
            return None  # the console signs its operators in itself
        allowed = scrapers if request.path == "/metrics" else operators
        found = _token_of(request.headers.get("Authorization", ""), allowed)
        if found is None:
            return json_response(401, {"error": "unauthorized",
                                       "detail": "send a valid operator token as "
                                                 "'Authorization: Bearer <token>'"},
                                 headers={"WWW-Authenticate": "Bearer"})
        g.operator = found
        return None

    # one statement per transaction: a reader never holds a lock across statements
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    sources = interpreters()
    for blueprint in (_transactions_blueprint(reader, sources), _bookings_blueprint(reader),
                      _events_blueprint(reader, settings.partitions),
                      _outbox_blueprint(reader, engine), _status_blueprint(settings, reader),
                      _audit_blueprint(reader), _reprocess_blueprint(settings)):
        api.register_blueprint(blueprint)
    _health_routes(app, engine)
    register_console(app, settings, engine)
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


def _console(path: str) -> bool:
    return path == CONSOLE or path.startswith(CONSOLE + "/")


def _token_of(header: str, tokens: Sequence[OperatorToken]) -> OperatorToken | None:
    """The token the bearer header carries, or None."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    candidate = given.strip().encode()
    # compare against every token, always, so timing does not reveal which one was close
    matches = [hmac.compare_digest(candidate, token.token.encode()) for token in tokens]
    return next((token for token, match in zip(tokens, matches, strict=True) if match), None)


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
               403: "the token's role does not allow it (a viewer's)",
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


def _listing_blueprint(engine: Engine, listing: queries.Listing, filters: type[Schema],
                       page: type[Schema], *, description: str, summary: str) -> Blueprint:
    """The blueprint of /v1/<listing>, with the list itself at its root; `summary` documents
    the list's order."""
    blp = _Blueprint(listing.name, __name__, url_prefix=f"/v1/{listing.name}",
                     description=description)

    def list_rows(args: dict[str, Any]) -> dict[str, Any]:
        return _page(engine, listing, args)

    list_rows.__doc__ = summary  # the operation's summary in the OpenAPI document
    view = _errors(blp)(list_rows)
    view = blp.response(200, page)(view)
    view = blp.arguments(filters, location="query")(view)
    blp.route("", endpoint=f"list_{listing.name}")(view)
    return blp


def _transactions_blueprint(engine: Engine, sources: Mapping[str, Interpreter]) -> Blueprint:
    blp = _listing_blueprint(
        engine, queries.TRANSACTIONS, TransactionFilters, TransactionPage,
        description="Payments and transfers",
        summary="Transactions, newest first (created_at, then transaction_id, then source).")

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
    blp = _listing_blueprint(
        engine, queries.BOOKINGS, BookingFilters, BookingPage,
        description="Bookings, their payments and emails",
        summary="Bookings, newest first (created_at, a booking not yet created first, "
                "reference).")

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
    blp = _listing_blueprint(
        engine, queries.EVENTS, event_filters(partitions), EventPage,
        description="The log as projected: one row per offset of each partition",
        summary="Records, newest offset first, then the highest partition.")

    @blp.route(f"/<int(max={MAX_BIGINT}):offset>")
    @blp.arguments(event_partition(partitions), location="query")
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


def _outbox_blueprint(reader: Engine, engine: Engine) -> Blueprint:
    blp = _listing_blueprint(reader, queries.OUTBOX, OutboxFilters, EmailPage,
                             description="Emails owed to customers",
                             summary="Emails, newest first.")

    @blp.route(f"/<int(max={MAX_BIGINT}):email_id>/retry", methods=["POST"])
    @requires("operator", "outbox.retry", lambda view: [f"outbox:{view['email_id']}"])
    @blp.response(200, EmailOut)
    @_errors(blp, 403, 404, 409)
    def retry(email_id: int) -> Mapping[str, Any]:
        """A dead or failed email goes back to pending, due now, its attempts counted anew
        (an operator token only; audited)."""
        try:
            with engine.begin() as conn:  # the retry and its audit row commit together
                row = queries.retry_email(conn, email_id)
                record_action(conn, {"template": row["template"]})
                return row
        except queries.EmailMissing as exc:
            abort(404, str(exc))
        except queries.NotRetryable as exc:
            abort(409, str(exc))

    return blp


def _audit_blueprint(engine: Engine) -> Blueprint:
    return _listing_blueprint(
        engine, AUDIT, AuditFilters, AuditPage,
        description="Operators' actions: who (a token's name), what, when, on which records",
        summary="Audit records, newest first (id): every action, refused and failed ones too.")


def _status_blueprint(settings: Settings, engine: Engine) -> Blueprint:
    blp = _Blueprint("status", __name__, url_prefix="/v1/status",
                     description="The log's end, consumers' lag, the outbox")

    @blp.route("")
    @blp.response(200, StatusOut)
    @_errors(blp)
    def get_status() -> dict[str, Any]:
        """The end offset of each of the log's streams, each consumer's checkpoint and lag,
        the outbox by status."""
        log_ends = read_log_ends(settings)  # before the database, which waits for no broker
        with engine.connect() as conn:
            return queries.status(conn, log_ends)

    return blp


def _reprocess_blueprint(settings: Settings) -> Blueprint:
    blp = _Blueprint("reprocess", __name__, url_prefix="/v1/reprocess",
                     description="Projecting chosen records again through today's code")

    @blp.route("", methods=["POST"])
    @requires("operator", "events.reprocess")
    @blp.arguments(reprocess_arguments(settings.partitions), location="json")
    @blp.response(200, ReprocessOut)
    @_errors(blp, 403, 404, 409)
    def reprocess_records(args: dict[str, Any]) -> dict[str, Any]:
        """Project again the chosen records that were rejected or ignored, as the projector
        would today (no checkpoint moves, no email is owed twice); with dry_run, report the
        rows and emails that would change and change nothing."""
        try:
            selection = reprocess.Selection(
                records=tuple((r["partition"], r["offset"]) for r in args.get("records", ())),
                source=args.get("source"), type=args.get("type"), outcome=args.get("outcome"),
                since=args.get("received_after"), until=args.get("received_before"))
        except reprocess.SelectionInvalid as exc:
            refused = BadRequest("the arguments are invalid; each one is named under fields")
            refused.data = {"messages": {"json": {"_schema": [str(exc)]}}}  # type: ignore[attr-defined]
            raise refused from None
        try:
            summary = reprocess.reprocess(settings, selection, args["dry_run"])
        except reprocess.NotProjected as exc:
            abort(404, str(exc))
        except reprocess.ReprocessFailed as exc:
            abort(409, str(exc))
        targets, detail = summary.audited()
        record_after(detail, targets)
        return summary.as_dict()

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
