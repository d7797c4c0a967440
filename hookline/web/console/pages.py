"""The console's pages: each reads through hookline.readside, as the API does, and renders a
template; the outbox's actions and a reprocess (in reprocessing) are the only writes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from jinja2 import TemplateError
from marshmallow import Schema, ValidationError
from sqlalchemy.engine import Engine

from hookline.config import Settings
from hookline.log.topology import read_log_ends
from hookline.mail.outbox import render
from hookline.readside import console, queries
from hookline.readside.audit import AUDIT, OUTCOMES
from hookline.senders.registry import interpreters
from hookline.web.console import session
from hookline.web.console.present import bar_chart
from hookline.web.console.reprocessing import add_reprocess_routes, filter_of
from hookline.web.console.session import Tokens
from hookline.web.operators import record_action, requires
from hookline.web.schemas import (
    MAX_BIGINT,
    AuditFilters,
    BookingFilters,
    OutboxFilters,
    TransactionFilters,
    encode_cursor,
    event_filters,
)

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
Row = dict[str, Any]


def add_routes(blp: Blueprint, settings: Settings, engine: Engine, tokens: Tokens) -> None:
    # one statement per transaction, as the API reads
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    _access_routes(blp, tokens)
    _overview_route(blp, settings, reader)
    _transaction_routes(blp, reader)
    _booking_routes(blp, reader)
    _event_routes(blp, settings, reader)
    _outbox_routes(blp, reader)
    add_reprocess_routes(blp, settings)

    @blp.get("/audit")
    def audit() -> tuple[str, int]:
        return _list(reader, AUDIT, AuditFilters, "console/audit.html", outcomes=OUTCOMES)

    @blp.route("/<path:_unknown>", methods=["GET", "POST"])
    def unknown(_unknown: str) -> Response:
        abort(404, "No such page in the console.")  # a page, not the API's JSON


def _redirect(endpoint: str, **values: Any) -> Response:
    return cast(Response, redirect(url_for(endpoint, **values), code=303))


def _access_routes(blp: Blueprint, tokens: Tokens) -> None:
    @blp.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> Any:
        if request.method == "GET":
            return render_template("console/sign_in.html")
        found = tokens.given(request.form.get("token", ""))
        if found is None:
            log.warning("console sign-in refused: not an operator token")
            return render_template("console/sign_in.html",
                                   refused="That is not an operator token."), 401
        session.sign_in(found[0])
        log.info("console: signed in as %s", found[1].name)
        return _redirect("console.overview")

    @blp.post("/sign-out")
    def sign_out() -> Response:
        log.info("console: %s signed out", g.operator.name)
        session.sign_out()
        return _redirect("console.sign_in")


def _overview_route(blp: Blueprint, settings: Settings, engine: Engine) -> None:
    @blp.get("/")
    def overview() -> str:
        log_ends = read_log_ends(settings)  # before the database, which waits for no broker
        with engine.connect() as conn:
            status = queries.status(conn, log_ends)
            deliveries = console.deliveries_last_hour(conn)
            rejections = console.recent_rejections(conn)
        return render_template("console/overview.html", status=status,
                               chart=bar_chart(deliveries),
                               alerts=console.alerts(status, rejections))


def _filters(schema: type[Schema]) -> tuple[Row, Row, Mapping[str, Any]]:
    """The list's filters as the API reads them, the form's values, and errors per field; a
    blank field of the form means no filter."""
    given = {k: v for k, v in request.args.items() if v.strip()}
    try:
        return schema().load(given), given, {}
    except ValidationError as exc:
        return {}, given, cast(Mapping[str, Any], exc.messages)


def _list(engine: Engine, listing: queries.Listing, schema: type[Schema], template: str,
          **context: Any) -> tuple[str, int]:
    args, given, errors = _filters(schema)
    rows, after = [], None
    if not errors:
        limit, cursor = args.pop("limit"), args.pop("cursor", None)
        with engine.connect() as conn:
            found = queries.page(conn, listing, args, limit, cursor)
        rows = found.items
        if found.next_key is not None:
            after = {**given, "cursor": encode_cursor(listing, found.next_key)}
    return render_template(template, rows=rows, given=given, errors=errors, after=after,
                           **context), 422 if errors else 200


def _transaction_routes(blp: Blueprint, engine: Engine) -> None:
    sources = interpreters()

    @blp.get("/transactions")
    def transactions() -> tuple[str, int]:
        return _list(engine, queries.TRANSACTIONS, TransactionFilters,
                     "console/transactions.html", statuses=queries.TRANSACTION_STATUSES,
                     sources=sorted(sources), flags=sorted(queries.TRANSACTION_FLAGS))

    @blp.get("/transactions/<id:transaction_id>", merge_slashes=False)
    def transaction(transaction_id: str) -> Any:
        source = request.args.get("source") or None
        if "\x00" in transaction_id or (source is not None and source not in sources):
            abort(404, "No such transaction.")
        try:
            with engine.connect() as conn:
                found = queries.transaction(conn, transaction_id, sources, source)
                emails = console.emails_of(conn, [e["id"] for e in found["events"]]
                                           if found else [])
        except queries.Ambiguous as exc:
            return render_template("console/ambiguous.html", transaction_id=transaction_id,
                                   candidates=exc.candidates), 409
        if found is None:
            abort(404, f"No transaction {transaction_id!r}.")
        return render_template("console/transaction.html", row=found, trail=found["events"],
                               emails=_by_event(emails))


def _booking_routes(blp: Blueprint, engine: Engine) -> None:
    @blp.get("/bookings")
    def bookings() -> tuple[str, int]:
        return _list(engine, queries.BOOKINGS, BookingFilters, "console/bookings.html",
                     statuses=queries.BOOKING_STATUSES, flags=sorted(queries.BOOKING_FLAGS))

    @blp.get("/bookings/<reference>")
    def booking(reference: str) -> str:
        if "\x00" in reference:
            abort(404, "No such booking.")
        with engine.connect() as conn:
            found = queries.booking(conn, reference)
            if found is None:
                abort(404, f"No booking {reference!r}.")
            stored = console.payloads(conn, [(e["partition"], e["offset"])
                                             for e in found["events"]])
        trail = [{**e, "payload": stored.get((e["partition"], e["offset"]))}
                 for e in found["events"]]
        return render_template("console/booking.html", row=found, trail=trail,
                               emails=_by_event(found["emails"]))


def _by_event(emails: list[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = {}
    for email in emails:
        grouped.setdefault(email["event_id"], []).append(email)
    return grouped


def _event_routes(blp: Blueprint, settings: Settings, engine: Engine) -> None:
    filters = event_filters(settings.partitions)
    searchable, sources = "q" in filters().fields, sorted(interpreters())  # fixed per process

    @blp.get("/events")
    def events() -> tuple[str, int]:
        return _list(engine, queries.EVENTS, filters, "console/events.html",
                     searchable=searchable, outcomes=queries.OUTCOMES,
                     reprocessable=filter_of(request.args),
                     sources=sources, partitions=settings.partitions)

    @blp.get("/events/<int:partition>/<int:offset>")
    def event(partition: int, offset: int) -> str:
        if partition >= settings.partitions or offset > MAX_BIGINT:
            abort(404, f"No record at offset {offset} of partition {partition}.")
        with engine.connect() as conn:
            found = queries.event(conn, offset, partition)
            if found is None:
                abort(404, f"No record at offset {offset} of partition {partition}.")
            emails = console.emails_of(conn, [found["id"]])
        return render_template("console/event.html", row=found, trail=[found],
                               emails=_by_event(emails))


def _outbox_routes(blp: Blueprint, engine: Engine) -> None:
    @blp.get("/outbox")
    def outbox() -> tuple[str, int]:
        return _list(engine, queries.OUTBOX, OutboxFilters, "console/outbox.html",
                     statuses=queries.OUTBOX_STATUSES, templates=queries.TEMPLATES)

    @blp.get("/outbox/<int:email_id>")
    def email(email_id: int) -> str:
        row = _email(engine, email_id)
        text, problem = row["body_text"], None
        if text is None:
            try:
                text = render(row["template"], row["context"]).text
            except (TemplateError, KeyError, TypeError, ValueError) as exc:
                problem = f"cannot be rendered: {exc}"
        return render_template("console/email.html", row=row, text=text, problem=problem)

    @blp.get("/outbox/<int:email_id>/preview")
    def preview(email_id: int) -> Response:
        row = _email(engine, email_id)
        html = row["body_html"]
        if html is None:
            try:
                html = render(row["template"], row["context"]).html
            except (TemplateError, KeyError, TypeError, ValueError):
                abort(422, "This email cannot be rendered from what it holds.")
        g.email_preview = True  # answered with the sandboxing policy, not the console's
        return Response(html, mimetype="text/html")

    _outbox_actions(blp, engine)


def _outbox_actions(blp: Blueprint, engine: Engine) -> None:
    @blp.post("/outbox/<int:email_id>/retry")
    @requires("operator", "outbox.retry", lambda view: [f"outbox:{view['email_id']}"])
    def retry(email_id: int) -> Response:
        if email_id > MAX_BIGINT:
            abort(404, f"No email {email_id} in the outbox.")
        try:
            with engine.begin() as conn:  # the retry and its audit row commit together
                row = queries.retry_email(conn, email_id)
                record_action(conn, {"template": row["template"], "from": "console"})
        except queries.EmailMissing as exc:
            abort(404, str(exc))
        except queries.NotRetryable as exc:
            abort(409, str(exc))
        flash(f"Email {email_id} is pending again: the mailer sends it next.")
        return _redirect("console.outbox", status="pending")

    @blp.post("/outbox/retry-dead")
    @requires("operator", "outbox.retry_dead")
    def retry_dead() -> Response:
        with engine.begin() as conn:
            ids = queries.retry_dead(conn)
            record_action(conn, {"from": "console"}, targets=[f"outbox:{i}" for i in ids])
        flash(f"{len(ids)} dead emails are pending again.")
        return _redirect("console.outbox", status="pending")


def _email(engine: Engine, email_id: int) -> Row:
    if email_id > MAX_BIGINT:
        abort(404, f"No email {email_id} in the outbox.")
    with engine.connect() as conn:
        row = console.email(conn, email_id)
    if row is None:
        abort(404, f"No email {email_id} in the outbox.")
    return row
