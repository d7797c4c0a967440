"""The stream on RabbitMQ: connection parameters, idempotent declaration, the log's end."""

from __future__ import annotations

import logging
import time
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from eventlog.settings import Settings, mask_url

log = logging.getLogger(__name__)
PEEK_SECONDS = 0.5
PEEK_PREFETCH = 2_000  # the last chunk and what follows it; the end is approximate under load


class BrokerUnreachable(Exception):
    """RabbitMQ cannot be reached or refused us; the message names the masked URL."""


def connection_parameters(amqp_url: str, name: str) -> pika.URLParameters:
    params = pika.URLParameters(amqp_url)
    params.client_properties = {"connection_name": f"hookline {name}"}
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    if params.heartbeat is None:
        params.heartbeat = 30
    return params


def stream_arguments(settings: Settings) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": "stream",
        "x-max-length-bytes": settings.stream_max_bytes,
    }
    if settings.stream_max_age:
        arguments["x-max-age"] = settings.stream_max_age
    if settings.stream_max_segment_bytes:  # retention drops whole segments only
        arguments["x-stream-max-segment-size-bytes"] = settings.stream_max_segment_bytes
    if settings.stream_replicas:  # on a cluster: a confirm then waits for a quorum of these
        arguments["x-initial-cluster-size"] = settings.stream_replicas
    return arguments


def declare_stream(channel: BlockingChannel, settings: Settings) -> None:
    """Declare the log's streams (one per partition); a no-op for those that exist with the
    same arguments."""
    for stream in settings.streams:
        channel.queue_declare(stream, durable=True, arguments=stream_arguments(settings))


def open_connection(settings: Settings, name: str) -> pika.BlockingConnection:
    """A blocking connection, or BrokerUnreachable with a sentence naming the masked URL."""
    try:
        return pika.BlockingConnection(connection_parameters(settings.amqp_url, name))
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnreachable(
            f"cannot reach RabbitMQ at {mask_url(settings.amqp_url)}: {_reason(exc)}"
        ) from None


def ensure_stream(settings: Settings) -> None:
    """Connect once and declare the streams, so a process fails fast with a clear sentence."""
    connection = open_connection(settings, "setup")
    try:
        declare_stream(connection.channel(), settings)
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise BrokerUnreachable(
            f"RabbitMQ refused to declare the log {settings.stream!r}: {exc.reply_text}"
        ) from None
    finally:
        if connection.is_open:
            connection.close()


def log_end_offset(connection: pika.BlockingConnection, stream: str) -> int:
    """Offset of the last record in the stream, -1 when it is empty."""
    # "last" starts at the final chunk; its final message is the end of the log.
    offsets = _peek(connection, stream, "last", limit=None)
    return max(offsets, default=-1)


def log_start_offset(connection: pika.BlockingConnection, stream: str) -> int | None:
    """Offset of the first record retention has kept, None when the stream is empty."""
    return min(_peek(connection, stream, "first", limit=1), default=None)


def _peek(connection: pika.BlockingConnection, stream: str, where: str,
          limit: int | None) -> list[int]:
    channel = connection.channel()
    # A peek never acks, and when it cancels pika would reject what is still arriving, which
    # streams answer by closing the connection: unacked stream deliveries are simply dropped.
    channel._impl.basic_reject = _drop
    channel.basic_qos(prefetch_count=limit or PEEK_PREFETCH)
    offsets: list[int] = []

    def on_message(_ch: Any, _method: Any, properties: Any, _body: bytes) -> None:
        offsets.append(int(properties.headers["x-stream-offset"]))

    channel.basic_consume(stream, on_message, arguments={"x-stream-offset": where})
    # under steady appends the stream never goes quiet: stop after a bounded look
    deadline = time.monotonic() + PEEK_SECONDS
    while time.monotonic() < deadline:
        seen = len(offsets)
        connection.process_data_events(time_limit=0.05)
        if (offsets and len(offsets) == seen) or (limit is not None and len(offsets) >= limit):
            break  # quiet after deliveries; an empty stream waits out the deadline
    channel.close()
    return offsets[:limit] if limit is not None else offsets


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"


def _drop(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for basic_reject on a peek channel."""
