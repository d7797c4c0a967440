"""What every hookline HTTP app shares: JSON responses and errors, request ids, /metrics."""

from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Any

import orjson
from flask import Flask, Response, g, has_request_context, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    # a list argument's errors are keyed by the item's index
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS),
                    status=status, mimetype="application/json", headers=headers)


def request_id() -> str:
    """This request's id: the caller's X-Request-ID when sane, else a new one; made once."""
    found: str | None = g.get("request_id")
    if found is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        found = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.request_id = found
    return found


def install_request_ids(app: Flask) -> None:
    """Every response carries X-Request-ID, whichever hook or handler produced it."""

    @app.after_request
    def give_request_id(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id()
        return response


class RequestIdFilter(logging.Filter):
    """Sets `request` to " request_id=…" on a line logged while serving a request, else ""."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request = f" request_id={request_id()}" if has_request_context() else ""
        return True


def register_error_handlers(app: Flask) -> None:
    """Every error is JSON `{"error", "detail"}`; nothing leaks a traceback."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        name = (exc.name or "error").lower().replace(" ", "_")
        body: dict[str, Any] = {"error": name, "detail": exc.description}
        messages = getattr(exc, "data", {}).get("messages")  # argument errors, per field
        if messages:
            body["fields"] = messages
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return json_response(exc.code or 500, body, headers)  # keeps Allow on a 405

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_response(500, {"error": "internal_error", "detail": "unexpected error"})


def metrics_view() -> Response:
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
