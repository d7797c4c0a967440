"""The stream on RabbitMQ: connection parameters, idempotent declaration, the log's end."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from hookline.config import Settings, mask_url
from hookline.lifecycle import Unreachable
from hookline.log.ends import LogEnd, LogEnds

log = logging.getLogger(__name__)
PEEK_SECONDS = 0.5
PEEK_PREFETCH = 2_000  # the last chunk and what follows it; the end is approximate under load


class BrokerUnreachable(Unreachable):
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


def node_parameters(settings: Settings, name: str) -> list[pika.URLParameters]:
    """One set of parameters per broker node, in the order they are tried."""
    return [connection_parameters(url, name) for url in settings.amqp_urls]


def connect(nodes: Sequence[pika.URLParameters]) -> tuple[pika.BlockingConnection, str]:
    """A blocking connection to the first of `nodes` that answers, with that node's host:port
    (no credentials); else the last node's error, as pika raises it for a list of nodes."""
    failed: Exception | None = None
    for node in nodes:
        try:
            return pika.BlockingConnection(node), f"{node.host}:{node.port}"
        except Exception as exc:  # the next node may answer; the last error is raised below
            failed = exc
    raise failed if failed is not None else ValueError("no broker node to connect to")


def masked_nodes(settings: Settings) -> str:
    return ", ".join(mask_url(url) for url in settings.amqp_urls)


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
    """A blocking connection to the first node that answers, or BrokerUnreachable with a
    sentence naming the masked URLs."""
    try:
        return connect(node_parameters(settings, name))[0]
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnreachable(
            f"cannot reach RabbitMQ at {masked_nodes(settings)}: {_reason(exc)}"
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
    found = log_end_offsets(connection, [stream])[0]
    if isinstance(found, Exception):
        raise found
    return found


def log_end_offsets(connection: pika.BlockingConnection,
                    streams: Sequence[str]) -> list[int | Exception]:
    """Each stream's last offset (-1 when empty), all peeked at once, so that N streams take one
    peek's time; for a stream that cannot be read, the broker's refusal instead."""
    # "last" starts at the final chunk; its final message is the end of the log.
    return [found if isinstance(found, Exception) else max(found, default=-1)
            for found in _peek(connection, streams, "last", limit=None)]


def log_start_offset(connection: pika.BlockingConnection, stream: str) -> int | None:
    """Offset of the first record retention has kept, None when the stream is empty."""
    found = _peek(connection, [stream], "first", limit=1)[0]
    if isinstance(found, Exception):
        raise found
    return min(found, default=None)


class _Peek:
    """A short look into one stream from `where`, on a channel of its own."""

    def __init__(self, connection: pika.BlockingConnection, stream: str, where: str,
                 limit: int | None) -> None:
        self.channel = connection.channel()
        # A peek never acks, and when it cancels pika would reject what is still arriving, which
        # streams answer by closing the connection: unacked stream deliveries are simply dropped.
        # pika has no public switch for that rejection (and streams refuse auto-ack consumers).
        self.channel._impl.basic_reject = _drop
        self.channel.basic_qos(prefetch_count=limit or PEEK_PREFETCH)
        self.limit = limit
        self.offsets: list[int] = []
        self.seen = 0
        self.channel.basic_consume(stream, self._on_message, arguments={"x-stream-offset": where})

    def _on_message(self, _ch: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self.offsets.append(int(properties.headers["x-stream-offset"]))

    def finished(self) -> bool:
        """Quiet after deliveries, or the limit reached; an empty stream never finishes."""
        quiet = bool(self.offsets) and len(self.offsets) == self.seen
        self.seen = len(self.offsets)
        return quiet or (self.limit is not None and len(self.offsets) >= self.limit)

    def result(self) -> list[int]:
        if self.channel.is_open:
            self.channel.close()
        return self.offsets[:self.limit] if self.limit is not None else self.offsets


def _peek(connection: pika.BlockingConnection, streams: Sequence[str], where: str,
          limit: int | None) -> list[list[int] | Exception]:
    peeks: list[_Peek | Exception] = []
    for stream in streams:
        try:
            peeks.append(_Peek(connection, stream, where, limit))
        except pika.exceptions.ChannelClosedByBroker as exc:  # e.g. no such stream
            peeks.append(exc)
    waiting = [peek for peek in peeks if isinstance(peek, _Peek)]
    # under steady appends a stream never goes quiet: stop after a bounded look
    deadline = time.monotonic() + PEEK_SECONDS
    while waiting and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
        waiting = [peek for peek in waiting if not peek.finished()]
    return [peek if isinstance(peek, Exception) else peek.result() for peek in peeks]


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"


def _drop(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for basic_reject on a peek channel."""


def read_log_ends(settings: Settings) -> LogEnds:
    """Each stream's end, all peeked at once over one connection (at most PEEK_SECONDS)."""
    try:
        connection = open_connection(settings, "status")
    except BrokerUnreachable as exc:
        return LogEnds(settings.stream, tuple(LogEnd(s, None, str(exc))
                                              for s in settings.streams))
    try:
        found = log_end_offsets(connection, settings.streams)
    except pika.exceptions.AMQPError as exc:
        found = [exc] * len(settings.streams)
    finally:
        if connection.is_open:
            connection.close()
    return LogEnds(settings.stream, tuple(
        LogEnd(stream, None, f"cannot read the stream: {end!r}"[:300])
        if isinstance(end, Exception) else LogEnd(stream, end)
        for stream, end in zip(settings.streams, found, strict=True)))
