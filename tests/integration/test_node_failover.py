"""Several broker nodes: each client skips a node that does not answer and uses the next."""

from __future__ import annotations

import time

import pytest

from hookline.config import Settings
from hookline.log.envelope import utcnow
from hookline.log.publisher import LogUnavailable, Publisher
from hookline.log.reader import StreamReader
from hookline.log.topology import BrokerUnreachable, ensure_stream, open_connection
from tests.conftest import AMQP_URL
from tests.faults.support import restartable_port
from tests.processes import NotYet, eventually


@pytest.fixture
def nodes(stream: str) -> Settings:
    """A node nothing listens on, then the machine's broker."""
    dead = f"amqp://guest:guest@127.0.0.1:{restartable_port()}/%2F"
    return Settings(amqp_url=f"{dead},{AMQP_URL}", stream=stream, publish_timeout=10)


def test_publisher_and_reader_move_past_a_node_that_is_down(nodes: Settings) -> None:
    publisher = Publisher(nodes, name="failover-test")
    publisher.start()
    try:
        assert publisher.wait_ready(30), "the publisher never reached the second node"
        publisher.publish(nodes.stream, "failover-1", b"{}", utcnow())
    finally:
        publisher.stop()
    reader = StreamReader(nodes, 0, 10, "failover-test", should_stop=lambda: False)
    batch = next(reader.batches())
    reader.close()
    assert [record.body for record in batch.records] == [b"{}"]


def test_a_short_connection_uses_the_first_node_that_answers(nodes: Settings) -> None:
    ensure_stream(nodes)
    open_connection(nodes, "failover-test").close()


def test_no_node_answering_names_every_node_with_its_password_masked(stream: str) -> None:
    urls = [f"amqp://guest:s3cret-never-shown@127.0.0.1:{restartable_port()}/%2F"
            for _ in range(2)]
    with pytest.raises(BrokerUnreachable) as refused:
        open_connection(Settings(amqp_url=",".join(urls), stream=stream), "failover-test")
    message = str(refused.value)
    assert "s3cret" not in message
    assert all(url.replace("s3cret-never-shown", "***") in message for url in urls)


def test_a_reader_whose_consumer_the_broker_cancels_subscribes_again(stream: str) -> None:
    """A stream deleted under its reader is the one cancellation a single node can show: the
    reader must subscribe again (here to the stream declared anew) instead of waiting forever."""
    settings = Settings(amqp_url=AMQP_URL, stream=stream, publish_timeout=10)
    publisher = Publisher(settings, name="cancel-test")
    publisher.start()
    deadline = time.monotonic() + 30
    reader = StreamReader(settings, 0, 10, "cancel-test",
                          should_stop=lambda: time.monotonic() > deadline)
    try:
        assert publisher.wait_ready(30)
        publisher.publish(stream, "before", b"[1]", utcnow())
        batches = reader.batches()
        first = next(batches)
        reader.ack(first)
        connection = open_connection(settings, "cancel-test")
        connection.channel().queue_delete(stream)  # the broker cancels the reader's consumer
        connection.close()
        ensure_stream(settings)
        eventually(lambda: _published_again(publisher, stream), timeout=30)
        again = next(batches)
    finally:
        reader.close()
        publisher.stop()
    assert [r.body for r in first.records] == [b"[1]"]
    assert again.records[0].offset >= 1, "the reader went back to an offset it had acked"


def _published_again(publisher: Publisher, stream: str) -> None:
    """A record in the stream declared anew (offsets 0 and 1), once the publisher is back."""
    for n in range(2):
        try:
            publisher.publish(stream, f"after-{n}", b"[2]", utcnow())
        except LogUnavailable as exc:
            raise NotYet(str(exc)) from None
