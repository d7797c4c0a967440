"""Publishing to the stream with pipelined publisher confirms, shared by a process's threads.

One I/O thread owns an asynchronous pika connection. Request threads queue a record and wait
on their own ticket; the I/O thread publishes everything queued in one go and resolves
tickets as the broker's (often `multiple`) confirms arrive. No request thread ever touches
pika, and no request waits for another request's round trip.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pika
import pika.channel
import pika.frame
from pika.adapters.select_connection import SelectConnection
from tenacity import wait_random_exponential

from hookline.config import Settings, mask_url
from hookline.log.topology import node_parameters, stream_arguments

log = logging.getLogger(__name__)


class LogUnavailable(Exception):
    """The broker did not confirm the record; the sender should retry later."""


def _held_lock() -> threading.Lock:
    """A lock acquired at birth: a one-shot signal far cheaper than an Event (no Condition)."""
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class _Ticket:
    stream: str
    message_id: str
    body: bytes
    timestamp: int
    done: threading.Lock = field(default_factory=_held_lock)  # released once resolved
    error: str | None = None


class Publisher:
    """Thread-safe confirmed publishing; start() it in the process that will use it."""

    def __init__(self, settings: Settings, name: str = "ingest") -> None:
        self._settings = settings
        self._nodes = node_parameters(settings, name)
        self._node = 0  # the node connected to, or tried next
        self._queued: collections.deque[_Ticket] = collections.deque()
        self._lock = threading.Lock()
        self._wakeup_pending = False
        self._connection: SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._next_tag = 0
        self._unconfirmed: dict[int, _Ticket] = {}
        self._tag_order: collections.deque[int] = collections.deque()
        self._ready = threading.Event()
        self._blocked = False
        self._connected = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    # -- request threads -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._blocked

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def inflight(self) -> int:
        return len(self._unconfirmed) + len(self._queued)

    def publish(self, stream: str, message_id: str, body: bytes, received_at: datetime) -> None:
        """Append one record to `stream` (one of the settings' streams) and return once the
        broker confirmed it; else LogUnavailable."""
        if not self.ready:
            raise LogUnavailable("the log is not reachable" if not self._blocked
                                 else "the broker is refusing new records (resource alarm)")
        ticket = _Ticket(stream, message_id, body, int(received_at.timestamp()))
        with self._lock:
            self._queued.append(ticket)
            wake = not self._wakeup_pending
            self._wakeup_pending = True
        connection = self._connection
        if wake and connection is not None:
            try:
                connection.ioloop.add_callback_threadsafe(self._drain)
            except Exception:  # the loop is closing: the ticket fails when its bound passes
                log.debug("publisher loop closing; ticket will time out")
        if not ticket.done.acquire(timeout=self._settings.publish_timeout):
            raise LogUnavailable(
                f"the broker did not confirm within {self._settings.publish_timeout:g} s"
            )
        if ticket.error is not None:
            raise LogUnavailable(ticket.error)

    def stop(self) -> None:
        self._stopping = True
        connection = self._connection
        if connection is not None:
            try:
                connection.ioloop.add_callback_threadsafe(self._close)
            except Exception:
                log.debug("publisher loop already closed")
        self._thread.join(timeout=5)

    # -- I/O thread --------------------------------------------------------------------------

    def _run(self) -> None:
        wait = wait_random_exponential(multiplier=0.2, max=5)
        attempt = 0
        while not self._stopping:
            attempt += 1
            self._connected = False
            connection = SelectConnection(
                self._nodes[self._node],
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
            )
            self._connection = connection
            connection.ioloop.start()
            if self._stopping:
                break
            if self._connected:  # a fresh outage: start the backoff from the beginning
                attempt = 1
            self._ready.clear()
            self._node = (self._node + 1) % len(self._nodes)  # theirs failed: try another
            delay = wait(_attempt_state(attempt))
            log.warning("publisher reconnecting to %s in %.1f s", self._node_url(), delay)
            time.sleep(delay)

    def _node_url(self) -> str:
        return mask_url(self._settings.amqp_urls[self._node])

    def _on_open(self, connection: Any) -> None:
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        log.warning("publisher cannot connect to %s: %s",
                    self._node_url(), error or type(error).__name__)
        connection.ioloop.stop()

    def _on_channel(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=lambda _: self._declare(channel))

    def _declare(self, channel: pika.channel.Channel, declared: int = 0) -> None:
        """Declare each stream in turn (one callback each), then start publishing."""
        streams = self._settings.streams
        if declared == len(streams):
            self._on_declared()
            return
        channel.queue_declare(streams[declared], durable=True,
                              arguments=stream_arguments(self._settings),
                              callback=lambda _frame: self._declare(channel, declared + 1))

    def _on_declared(self) -> None:
        self._next_tag = 0
        self._blocked = False
        self._connected = True
        self._ready.set()
        log.info("publisher connected to %s, %s", self._node_url(),
                 ", ".join(self._settings.streams))
        self._drain()

    def _drain(self) -> None:
        with self._lock:
            self._wakeup_pending = False
            tickets = list(self._queued)
            self._queued.clear()
        channel = self._channel
        if channel is None or not channel.is_open:
            self._fail(tickets, "the log is not reachable")
            return
        for ticket in tickets:
            self._publish(channel, ticket)

    def _publish(self, channel: pika.channel.Channel, ticket: _Ticket) -> None:
        properties = pika.BasicProperties(
            message_id=ticket.message_id, timestamp=ticket.timestamp,
            content_type="application/json", delivery_mode=2,
        )
        try:
            channel.basic_publish("", ticket.stream, ticket.body, properties)
        except Exception as exc:  # this record only (e.g. an id too long for AMQP): not the loop
            log.warning("cannot publish id=%.100s: %s", ticket.message_id, exc)
            _resolve(ticket, "the record could not be published")
            return
        self._next_tag += 1
        self._unconfirmed[self._next_tag] = ticket
        self._tag_order.append(self._next_tag)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        error = None if isinstance(method, pika.spec.Basic.Ack) else "the broker refused the record"
        tag = method.delivery_tag
        if not method.multiple:
            ticket = self._unconfirmed.pop(tag, None)
            if ticket is not None:
                _resolve(ticket, error)
            return
        while self._tag_order and self._tag_order[0] <= tag:
            ticket = self._unconfirmed.pop(self._tag_order.popleft(), None)
            if ticket is not None:
                _resolve(ticket, error)

    def _on_blocked(self, _connection: Any, _frame: Any) -> None:
        log.warning("broker blocked publishing (resource alarm); answering 503 until it lifts")
        self._blocked = True

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        log.info("broker unblocked publishing")
        self._blocked = False

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if not self._stopping:
            log.warning("publisher channel closed: %s", reason)
        self._channel = None
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        if not self._stopping:
            log.warning("publisher connection closed: %s", reason)
        self._ready.clear()
        self._channel = None
        pending = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._tag_order.clear()
        self._fail(pending, "the connection to the log was lost before confirmation")
        with self._lock:
            queued = list(self._queued)
            self._queued.clear()
            self._wakeup_pending = False
        self._fail(queued, "the log is not reachable")
        connection.ioloop.stop()

    def _close(self) -> None:
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()
        elif connection is not None:
            connection.ioloop.stop()

    @staticmethod
    def _fail(tickets: list[_Ticket], error: str) -> None:
        for ticket in tickets:
            _resolve(ticket, error)


def _resolve(ticket: _Ticket, error: str | None) -> None:
    ticket.error = error
    ticket.done.release()


def _attempt_state(attempt: int) -> Any:
    """The minimal retry state tenacity's wait strategies read."""
    return type("_State", (), {"attempt_number": attempt})()
