"""Reading the stream in a process of its own, so that decoding AMQP deliveries (pika, in
Python) runs on another core than projecting them.

The reading process acks each batch to the broker as soon as it has handed it over: on a
stream an ack only asks for more records, and where a projector resumes is its checkpoint in
PostgreSQL, never the broker's. The pipe between the two is the backpressure: handing a batch
over blocks until the projector takes it, so the reading process stays about a batch ahead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from hookline.config import Settings
from hookline.log.reader import Batch, Record, StreamReader

log = logging.getLogger(__name__)
_CONTEXT = multiprocessing.get_context("spawn")  # a fork would copy the parent's threads' locks
_POLL_SECONDS = 0.2


class ReaderProcess:
    """Batches from `start`, read (and acked) by a child process."""

    def __init__(self, settings: Settings, start: int, batch_size: int, name: str,
                 should_stop: Callable[[], bool]) -> None:
        self._should_stop, self._batch_size = should_stop, batch_size
        self._stop = _CONTEXT.Event()
        self._pipe, child_end = _CONTEXT.Pipe(duplex=False)
        self._process = _CONTEXT.Process(
            target=_read, name=f"{name} reader", daemon=True,
            args=(settings, start, batch_size, name, child_end, self._stop, os.getpid(),
                  logging.getLogger().level))
        self._process.start()
        child_end.close()

    def batches(self) -> Iterator[Batch]:
        while not self._should_stop():
            try:
                records = take(self._pipe, self._batch_size, _POLL_SECONDS)
            except (EOFError, OSError):  # it died, perhaps mid-batch: the signal that stops us
                if self._should_stop():
                    return
                raise RuntimeError(f"the stream's reading process exited "
                                   f"(code {self._process.exitcode})") from None
            if records:
                yield Batch(records, delivery_tag=0)

    def close(self) -> None:
        self._stop.set()
        self._pipe.close()  # a child blocked handing over a batch stops on the broken pipe
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def take(pipe: Connection, batch_size: int, wait: float) -> list[Record]:
    """Every record handed over so far, until there are `batch_size` or more, waiting up to
    `wait` seconds for the first. Merged, because under a light load the child hands over a
    record or two at a time, and a transaction each (milliseconds, however small) falls behind."""
    records: list[Record] = []
    while len(records) < batch_size and pipe.poll(wait):
        kind, value = pipe.recv()
        if kind == "error":
            raise value  # nothing taken is lost: the projector resumes from its checkpoint
        records += [Record(offset, body) for offset, body in value]
        wait = 0
    return records


def _read(settings: Settings, start: int, batch_size: int, name: str, pipe: Connection,
          stop: Any, parent: int, level: int) -> None:
    """The child: read, ack, hand over, until told to stop or the parent is gone."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # A stop signal to the process group reaches us too: were we to die of it first, the
    # parent would see its reader die before it knows it is stopping. It stops us instead.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    reader = StreamReader(settings, start, batch_size, name, idle_seconds=_POLL_SECONDS,
                          should_stop=lambda: stop.is_set() or os.getppid() != parent)
    try:
        for batch in reader.batches():
            reader.ack(batch)
            if not _hand_over(pipe, ("batch", [(r.offset, r.body) for r in batch.records])):
                return
    except Exception as exc:  # an offset gap, say: the parent raises it as its own
        if not _hand_over(pipe, ("error", exc)):
            log.warning("stream reading failed after the projector stopped: %s", exc)
    finally:
        reader.close()


def _hand_over(pipe: Connection, message: tuple[str, Any]) -> bool:
    """Send to the parent; False once it has closed its end."""
    try:
        pipe.send(message)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True
