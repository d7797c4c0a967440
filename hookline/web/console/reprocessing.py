"""The console's reprocess: a record's or a filter's records, shown first as a dry run's diff
on a confirmation page, then projected again; both audited as the API's POST /v1/reprocess."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from marshmallow import Schema, ValidationError, fields, validate

from hookline.config import Settings
from hookline.projection import reprocess
from hookline.readside import queries
from hookline.senders.registry import SOURCES
from hookline.web.operators import record_after, requires
from hookline.web.schemas import MAX_BIGINT, OneOf, Partition, Text, period

log = logging.getLogger(__name__)
FILTERS = ("source", "type", "outcome", "received_after", "received_before")
# what an events list may filter by that a reprocess's selection cannot
NOT_SELECTABLE = ("subject", "q", "partition")


def selection_form(partitions: int) -> type[Schema]:
    """The form's fields: one record by partition and offset, or the events' filters."""
    return Schema.from_dict({
        "partition": Partition(partitions),
        "offset": fields.Integer(validate=validate.Range(min=0, max=MAX_BIGINT)),
        "source": OneOf([*SOURCES, "unknown"]),
        "type": Text(),
        "outcome": OneOf(queries.OUTCOMES),
        **period("received"),
    }, name="ReprocessForm")


def filter_of(given: Mapping[str, str]) -> dict[str, str] | None:
    """The events list's filter as a reprocess form's fields, or None when the list is filtered
    by what a selection cannot say (or by nothing: that is a rebuild)."""
    if any(given.get(name) for name in NOT_SELECTABLE):
        return None
    chosen = {name: given[name] for name in FILTERS if given.get(name)}
    return chosen or None


def add_reprocess_routes(blp: Blueprint, settings: Settings) -> None:
    form = selection_form(settings.partitions)

    @blp.post("/events/reprocess/preview")
    @requires("operator", "events.reprocess")
    def reprocess_preview() -> str:
        fields_, selection = _selection(form)
        summary = _run(settings, selection, dry_run=True)
        return render_template("console/reprocess.html", summary=summary, fields=fields_,
                               back=_back(fields_))

    @blp.post("/events/reprocess")
    @requires("operator", "events.reprocess")
    def reprocess_records() -> Response:
        fields_, selection = _selection(form)
        summary = _run(settings, selection, dry_run=False)
        flash(f"Reprocessed {summary.reprocessed} of {summary.selected} records selected: "
              f"{summary.changed} changed outcome, {summary.still_rejected} still rejected, "
              f"{summary.skipped} skipped (already applied), "
              f"{summary.emails_enqueued} emails enqueued.")
        return cast(Response, redirect(_back(fields_), code=303))


def _selection(form: type[Schema]) -> tuple[dict[str, str], reprocess.Selection]:
    """The form's fields as sent (for the next form) and the selection they make; a bad form
    is a 422 naming its fields."""
    given = {k: v for k, v in request.form.items() if k in form().fields and v.strip()}
    try:
        args = form().load(given)
    except ValidationError as exc:
        abort(422, "; ".join(f"{name}: {' '.join(map(str, messages))}"
                             for name, messages in cast(dict[str, Any], exc.messages).items()))
    if "partition" in args and "offset" not in args:
        abort(422, "offset: a record is chosen by its partition and offset")
    records = ((args.get("partition", 0), args["offset"]),) if "offset" in args else ()
    try:  # offsets and a filter at once are refused by the selection itself
        selection = reprocess.Selection(
            records=records, source=args.get("source"), type=args.get("type"),
            outcome=args.get("outcome"), since=args.get("received_after"),
            until=args.get("received_before"))
    except reprocess.SelectionInvalid as exc:
        abort(422, str(exc))
    return given, selection


def _run(settings: Settings, selection: reprocess.Selection,
         dry_run: bool) -> reprocess.Summary:
    """The reprocess, or its dry run, and its audit row, as POST /v1/reprocess writes it."""
    try:
        summary = reprocess.reprocess(settings, selection, dry_run)
    except reprocess.NotProjected as exc:
        abort(404, str(exc))
    except reprocess.ReprocessFailed as exc:
        abort(409, str(exc))
    targets, detail = summary.audited()
    record_after({**detail, "from": "console"}, targets)
    return summary


def _back(fields_: Mapping[str, str]) -> str:
    """Where the records are shown: the record's page, or the events list so filtered."""
    if "offset" in fields_:
        return url_for("console.event", partition=int(fields_.get("partition", "0")),
                       offset=int(fields_["offset"]))
    values: dict[str, Any] = dict(fields_)
    return url_for("console.events", **values)
