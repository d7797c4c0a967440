"""The ingress: verify → validate → envelope → publish and wait for the confirm → 202."""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    RequestEntityTooLarge,
)

from hookline.config import Settings
from hookline.log.envelope import encode, envelope_id, utcnow
from hookline.log.publisher import LogUnavailable, Publisher
from hookline.senders.base import PayloadInvalid
from hookline.senders.registry import ingresses
from hookline.senders.signatures import InvalidSignature
from hookline.web import metrics
from hookline.web.http import (
    install_request_ids,
    json_response,
    metrics_view,
    register_error_handlers,
)

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "5"
_JSON_TYPES = frozenset({"application/json"})


def create_app(settings: Settings, publisher: Publisher) -> Flask:
    app = Flask(__name__)
    install_request_ids(app)
    # One byte over the limit: a chunked body is cut at the limit silently, so read one more.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    sources = ingresses(settings)

    @app.post("/v1/webhooks/<source>")
    def receive(source: str) -> Response:
        started = perf_counter()
        label = source if source in sources else "unknown"
        outcome, response = "error", None  # until we know better: an unexpected error is a 500
        try:
            response = _receive(source)
            outcome = "accepted"
        except _Refused as refused:
            outcome, response = refused.outcome, refused.response
        finally:
            metrics.WEBHOOKS_RECEIVED.labels(label, outcome).inc()
            metrics.REQUEST_SECONDS.observe(perf_counter() - started)
        return response

    def _receive(source: str) -> Response:
        ingress = sources.get(source)
        if ingress is None:
            _discard_body()
            raise _Refused("unknown_source", 404, "unknown_source",
                           f"no webhook source named {source!r} is configured")
        if request.mimetype not in _JSON_TYPES and not request.mimetype.endswith("+json"):
            _discard_body()
            raise _Refused("unsupported_media_type", 415, "unsupported_media_type",
                           "send the webhook as application/json")
        try:
            body = request.get_data(cache=False)
            if len(body) > settings.max_body_bytes:
                raise RequestEntityTooLarge()
            delivery = ingress.accept(request.headers, body)
        except RequestEntityTooLarge:
            # the unread rest of the body stays on the socket: the connection cannot be reused
            raise _Refused("too_large", 413, "payload_too_large",
                           f"the body is over {settings.max_body_bytes} bytes",
                           headers={"Connection": "close"}) from None
        except ClientDisconnected:
            # the body stopped coming: closed, or silent past the server's read timeout
            raise _Refused("incomplete", 408, "request_timeout",
                           "the body did not arrive in full", headers={"Connection": "close"}
                           ) from None
        except BadRequest as exc:
            raise _malformed(exc) from None
        except InvalidSignature as exc:
            raise _Refused("invalid_signature", 401, "invalid_signature", str(exc)) from None
        except PayloadInvalid as exc:
            raise _Refused("invalid_payload", 422, "invalid_payload", str(exc),
                           fields=exc.errors) from None
        received_at = utcnow()
        record_id = envelope_id(source, delivery.key)
        if len(record_id.encode()) > 255:  # the id travels as an AMQP short string
            raise _Refused("invalid_payload", 422, "invalid_payload",
                           "the delivery's idempotency key is longer than 255 bytes")
        record = encode(record_id, source, delivery.type, delivery.subject, received_at, body,
                        delivery.trusted)
        publish_started = perf_counter()
        metrics.PUBLISH_INFLIGHT.inc()
        try:
            publisher.publish(settings.stream_for(delivery.subject), record_id, record,
                              received_at)
        except LogUnavailable as exc:
            log.warning("not accepted, log unavailable: id=%s source=%s reason=%s",
                        record_id, source, exc)
            raise _Refused("unavailable", 503, "log_unavailable", str(exc),
                           headers={"Retry-After": RETRY_AFTER_SECONDS}) from None
        finally:
            metrics.PUBLISH_INFLIGHT.dec()
        metrics.PUBLISH_SECONDS.observe(perf_counter() - publish_started)
        return json_response(202, {"id": record_id, "status": "accepted"})

    @app.get("/")
    def health() -> Response:
        return json_response(200, {"status": "HEALTHY", "current_time": utcnow()})

    @app.get("/healthz")
    def alive() -> Response:
        return json_response(200, {"status": "alive"})

    @app.get("/readyz")
    def ready() -> Response:
        if publisher.ready:
            return json_response(200, {"status": "ready", "broker": "reachable"})
        return json_response(503, {"error": "not_ready", "detail": "the broker is unreachable"},
                             headers={"Retry-After": RETRY_AFTER_SECONDS})

    app.add_url_rule("/metrics", "metrics", metrics_view)
    register_error_handlers(app)
    return app


def _discard_body() -> None:
    """Read the body of a request refused without it: left unread, it would be taken for the
    sender's next request on the connection. Reads at most MAX_CONTENT_LENGTH bytes."""
    try:
        request.get_data(cache=False)
    except (RequestEntityTooLarge, ClientDisconnected):
        pass  # the refusal stands: the server drains a short rest, else closes
    except BadRequest as exc:
        raise _malformed(exc) from None


def _malformed(exc: BadRequest) -> _Refused:
    """A body whose framing cannot be read (a broken chunk): where the next request would
    start is unknown, so the connection closes."""
    return _Refused("malformed", 400, "bad_request", str(exc.description),
                    headers={"Connection": "close"})


class _Refused(Exception):
    def __init__(self, outcome: str, status: int, error: str, detail: str,
                 fields: Any = None, headers: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"error": error, "detail": detail}
        if fields:
            body["fields"] = fields
        self.outcome = outcome
        self.response = json_response(status, body, headers)
