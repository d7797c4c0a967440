"""Reading the stream in batches from a given offset, with acks, reconnects and gap checks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    wait_random_exponential,
)

from hookline.config import Settings
from hookline.log.topology import (
    connect,
    declare_stream,
    log_start_offset,
    node_parameters,
)

log = logging.getLogger(__name__)


class ConsumerCancelled(pika.exceptions.AMQPError):  # type: ignore[misc]
    """The broker cancelled our consumer (its stream member moved or went down): subscribe
    again from the next offset."""


class OffsetGap(Exception):
    """The stream no longer holds the offset we need (retention dropped it)."""


# not frozen, for the projector's speed (hookline/domain/transactions.py); never changed once made
@dataclass(slots=True)
class Record:
    offset: int
    body: bytes


# not frozen, for the projector's speed (hookline/domain/transactions.py); never changed once made
@dataclass(slots=True)
class Batch:
    records: list[Record]
    delivery_tag: int

    @property
    def last_offset(self) -> int:
        return self.records[-1].offset


class StreamReader:
    """Yields batches from `start`; call ack(batch) once a batch's effects are committed."""

    def __init__(self, settings: Settings, start: int, batch_size: int, name: str,
                 should_stop: Callable[[], bool], idle_seconds: float = 1.0) -> None:
        self._settings = settings
        self._nodes = node_parameters(settings, name)
        self._next = start
        self._batch_size = batch_size
        self._should_stop = should_stop
        self._idle = idle_seconds
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._buffer: list[tuple[int, int, bytes]] = []
        self._first_delivery = True
        self._cancelled = False

    def batches(self) -> Iterator[Batch]:
        while not self._should_stop():
            if self._channel is None:
                try:
                    self._connect()
                except pika.exceptions.AMQPError:
                    if self._should_stop():  # told to stop while the broker was away
                        return
                    raise
            try:
                batch = self._next_batch()
            except pika.exceptions.AMQPError as exc:
                log.warning("stream connection lost at offset %d: %s", self._next, exc)
                self._drop_connection()
                continue
            if batch is not None:
                yield batch

    def ack(self, batch: Batch) -> None:
        """Acknowledge the whole batch at once; after a lost connection we resume past it."""
        self._next = batch.last_offset + 1
        try:
            if self._channel is not None:
                self._channel.basic_ack(batch.delivery_tag, multiple=True)
        except pika.exceptions.AMQPError as exc:
            log.warning("ack of offsets up to %d failed, will resume after it: %s",
                        batch.last_offset, exc)
            self._drop_connection()

    def close(self) -> None:
        """Close the connection (cancelling a stream consumer with unacked records would not do)."""
        self._drop_connection()

    @property
    def next_offset(self) -> int:
        return self._next

    def _connect(self) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(pika.exceptions.AMQPError),
            wait=wait_random_exponential(multiplier=0.2, max=10),
            stop=lambda _state: self._should_stop(),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        retrying(self._subscribe)

    def _subscribe(self) -> None:
        connection, node = connect(self._nodes)
        channel = connection.channel()
        declare_stream(channel, self._settings)
        channel.basic_qos(prefetch_count=self._batch_size * 2)
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.basic_consume(self._settings.stream, self._on_message,
                              arguments={"x-stream-offset": self._next})
        self._connection, self._channel = connection, channel
        self._cancelled = False
        log.info("reading %s from offset %d on node %s", self._settings.stream, self._next,
                 node)
        self._buffer = []
        self._first_delivery = True

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        offset = int(properties.headers["x-stream-offset"])
        self._buffer.append((offset, method.delivery_tag, body))

    def _on_cancelled(self, _frame: Any) -> None:
        self._cancelled = True

    def _next_batch(self) -> Batch | None:
        assert self._connection is not None
        if self._cancelled and not self._buffer:
            raise ConsumerCancelled("the broker cancelled the stream consumer")
        while len(self._buffer) < self._batch_size and not self._should_stop():
            before = len(self._buffer)
            self._connection.process_data_events(time_limit=0 if before else self._idle)
            if len(self._buffer) == before:
                break
        if not self._buffer:
            return None
        taken = self._buffer[: self._batch_size]
        self._buffer = self._buffer[self._batch_size:]
        return self._to_batch(taken)

    def _to_batch(self, taken: list[tuple[int, int, bytes]]) -> Batch | None:
        if self._first_delivery:
            self._first_delivery = False
            self._check_gap(taken[0][0])
        records = [Record(offset, body) for offset, _, body in taken if offset >= self._next]
        last_tag = taken[-1][1]
        if not records:  # a chunk's leading records before our offset: ack and move on
            self._channel.basic_ack(last_tag, multiple=True)
            return None
        return Batch(records, last_tag)

    def _check_gap(self, first: int) -> None:
        if first <= self._next:
            return
        assert self._connection is not None
        start = log_start_offset(self._connection, self._settings.stream)
        if start is not None and start <= self._next:
            return  # offsets that never held a record (segment boundaries), not lost ones
        message = (f"stream {self._settings.stream} starts at offset {first} but offset "
                   f"{self._next} was expected: {first - self._next} records are gone")
        if not self._settings.accept_gaps:
            raise OffsetGap(message + " (set HOOKLINE_ACCEPT_GAPS=true to skip them)")
        log.error("%s; skipping them as HOOKLINE_ACCEPT_GAPS allows", message)
        self._next = first

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._buffer = []
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                log.debug("connection already gone")
