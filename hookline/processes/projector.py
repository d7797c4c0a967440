"""The projector: batches read from the log by a child process, each projected in one
transaction with its checkpoint."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence

import psycopg

from hookline.config import PROJECTOR, Settings, consumer_name
from hookline.db.connection import Database
from hookline.lifecycle import Stopper
from hookline.log.reader import Batch
from hookline.log.reader_process import ReaderProcess
from hookline.log.topology import log_end_offset, log_start_offset, open_connection
from hookline.processes import metrics
from hookline.processes.leadership import Leadership
from hookline.processes.loop import LeaderLoop, outages
from hookline.projection.batch import CheckpointMoved, Partition, load_checkpoint, project_batch
from hookline.senders.registry import interpreters

log = logging.getLogger(__name__)
# measured on RabbitMQ's segment files: AMQP properties and chunk headers, per record
RECORD_OVERHEAD_BYTES = 190


class Projector(LeaderLoop):
    """Projects one partition of the log (the whole log when it has one) while it leads."""

    def __init__(self, settings: Settings, stopper: Stopper, partition: int = 0) -> None:
        self.settings = settings.partition(partition)  # `stream` is this partition's
        self.consumer = consumer_name(PROJECTOR, partition, settings.partitions)
        super().__init__(Leadership(settings, self.consumer, stopper), stopper)
        self.partition = Partition(partition, shared=settings.partitions > 1)
        self.interpreters = interpreters()
        self.db = Database(settings.psycopg_url, stopper, prepare_threshold=0)
        self.checkpoint = -1
        self._records_read = self._bytes_read = 0

    def run(self) -> None:
        LagWatcher(self).start()
        super().run()

    def record_size(self) -> float | None:
        """Mean bytes a record takes on disk, from the records read so far."""
        if not self._records_read:
            return None
        return self._bytes_read / self._records_read + RECORD_OVERHEAD_BYTES

    def lead(self) -> None:
        self.checkpoint = self.db.run(lambda c: load_checkpoint(c, self.consumer))
        metrics.CONSUMER_OFFSET.labels(self.consumer).set(self.checkpoint)
        log.info("%s starting after offset %d of %s", self.consumer, self.checkpoint,
                 self.settings.stream)
        reader = ReaderProcess(self.settings, self.checkpoint + 1, self.settings.projector_batch,
                               self.consumer, self.should_stop)
        with outages(self.db, self.stopper, log, "; the batch was not applied"):
            try:
                for batch in reader.batches():
                    self._project(batch)
            except (CheckpointMoved, psycopg.errors.UniqueViolation):
                if not self._overtaken():
                    raise
                log.warning("another projector committed past offset %d: standing by",
                            self.checkpoint)
            finally:
                reader.close()
        log.info("%s stopped after offset %d", self.consumer, self.checkpoint)

    def _overtaken(self) -> bool:
        """Whether a leader of a moment ago committed past our checkpoint, so ours must yield."""
        current = self.db.run(lambda c: load_checkpoint(c, self.consumer))
        return bool(current != self.checkpoint)

    def _project(self, batch: Batch) -> None:
        started = time.perf_counter()
        outcomes = self.db.run(lambda c: project_batch(
            c, self.consumer, batch.records, self.checkpoint, self.interpreters,
            self.settings.booking_ttl, self.partition))
        self.checkpoint = batch.last_offset
        self._records_read += len(batch.records)
        self._bytes_read += sum(len(record.body) for record in batch.records)
        for outcome, count in outcomes.items():
            metrics.EVENTS_PROJECTED.labels(outcome).inc(count)
        metrics.CONSUMER_OFFSET.labels(self.consumer).set(self.checkpoint)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)


def project(settings: Settings, stopper: Stopper, partitions: Sequence[int]) -> None:
    """Project the given partitions, each in a thread of its own, until asked to stop. One
    failing stops the others and is raised here, so the process exits and is restarted."""
    metrics.LOG_PARTITIONS.set(settings.partitions)
    failures: list[BaseException] = []

    def run(projector: Projector) -> None:
        try:
            projector.run()
        except BaseException as exc:
            failures.append(exc)
            stopper.set()
            raise

    threads = [threading.Thread(target=run, args=(Projector(settings, stopper, k),),
                                name=f"partition {k}") for k in partitions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class LagWatcher(threading.Thread):
    """While leading, reads the log's ends every few seconds: the lag and the stream's size."""

    def __init__(self, projector: Projector, interval: float = 2.0) -> None:
        super().__init__(name=f"lag {projector.consumer}", daemon=True)
        self.settings, self.projector, self.interval = projector.settings, projector, interval

    def run(self) -> None:
        metrics.STREAM_MAX_BYTES.set(self.settings.stream_max_bytes)
        connection = None
        while not self.projector.stopper.wait(self.interval):
            if not self.projector.leadership.leading:
                with contextlib.suppress(KeyError):  # a standby's checkpoint is stale
                    metrics.CONSUMER_LAG.remove(self.projector.consumer)
                continue
            try:
                connection = connection if connection and connection.is_open else \
                    open_connection(self.settings, "lag")
                end = log_end_offset(connection, self.settings.stream)
                first = log_start_offset(connection, self.settings.stream)
            except Exception as exc:
                log.debug("lag unknown: %s", exc)
                connection = None
                continue
            self._publish(first, end)

    def _publish(self, first: int | None, end: int) -> None:
        lag = max(0, end - self.projector.checkpoint)
        metrics.CONSUMER_LAG.labels(self.projector.consumer).set(lag)
        if first is None:
            return
        stream = self.settings.stream
        metrics.STREAM_FIRST_OFFSET.labels(stream).set(first)
        size = self.projector.record_size()
        if size is not None:
            metrics.STREAM_BYTES.labels(stream).set((end - first + 1) * size)
