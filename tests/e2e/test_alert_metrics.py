"""The gauges behind the alerts that hookline computes itself: the log's size against its limit,
who leads, and how long the oldest customer email has waited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hookline.config import Settings
from hookline.processes.projector import RECORD_OVERHEAD_BYTES
from tests.e2e.test_bookings import SECRET, booking, post_booking
from tests.processes import Pipeline, eventually, free_port, running_pipeline


class Scrape:
    def __init__(self, bind: str) -> None:
        text = requests.get(f"http://{bind}/metrics", timeout=5).text
        self.samples = {(s.name, frozenset(s.labels.items())): s.value
                        for family in text_string_to_metric_families(text)
                        for s in family.samples}

    def __call__(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))


@pytest.fixture
def unreachable_relay(env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    """ingest, projector and a mailer whose SMTP relay refuses every connection."""
    relay = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    with running_pipeline({**env, "HOOKLINE_BOOKINGS_SECRETS": SECRET,
                           "HOOKLINE_SMTP_URL": relay}, tmp_path,
                          parts=("ingest", "projector")) as pipeline:
        pipeline.start_mailer()
        yield pipeline


def test_an_email_the_relay_refuses_shows_as_the_oldest_pending_and_keeps_ageing(
        unreachable_relay: Pipeline) -> None:
    post_booking(unreachable_relay, booking("BK-AGE", "age@example.com", "Ada"))
    mailer = unreachable_relay.processes["mailer"].env["HOOKLINE_MAILER_METRICS_BIND"]

    def waiting(at_least: float) -> float:
        found = Scrape(mailer)
        assert found("hookline_outbox_pending") == 1
        age = found("hookline_outbox_oldest_pending_seconds")
        assert age is not None
        assert age >= at_least
        return age

    first = eventually(lambda: waiting(0.5), timeout=30)
    eventually(lambda: waiting(first + 5), timeout=30)  # refreshed every few seconds
    assert Scrape(mailer)("hookline_outbox_dead") == 0


def test_the_leading_projector_reports_the_log_size_against_its_limit(
        unreachable_relay: Pipeline, settings: Settings) -> None:
    for n in range(20):
        post_booking(unreachable_relay, booking(f"BK-SIZE-{n}", f"g{n}@example.com", "G"))
    projector = unreachable_relay.processes["projector"].env["HOOKLINE_PROJECTOR_METRICS_BIND"]

    def sized() -> float:
        found = Scrape(projector)
        assert found("hookline_leader", lock="projector") == 1
        assert found("hookline_consumer_lag", consumer="projector") == 0
        assert found("hookline_log_partitions") == 1
        assert found("hookline_stream_first_offset", stream=settings.stream) == 0
        assert found("hookline_stream_max_bytes") == settings.stream_max_bytes
        size = found("hookline_stream_bytes", stream=settings.stream)
        assert size is not None
        assert size > 20 * RECORD_OVERHEAD_BYTES
        return size

    size = eventually(sized, timeout=30)
    # 20 records of a few hundred bytes of JSON each, plus their headers on disk
    assert 20 * (RECORD_OVERHEAD_BYTES + 200) < size < 20 * (RECORD_OVERHEAD_BYTES + 2000)
