"""A projector killed or stopped mid-backlog: after a restart, every record exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hookline.config import Settings
from tests.faults.support import expected, projected, publish_backlog
from tests.processes import Pipeline, Process, eventually, running_pipeline

BACKLOG = 5_000
LAST = BACKLOG - 1  # offsets are 0..LAST


@pytest.fixture
def backlog(settings: Settings) -> list[dict[str, str]]:
    """5,000 confirmed transaction records in the test's stream, none projected yet."""
    return publish_backlog(settings, range(1, BACKLOG + 1))


@pytest.fixture
def small_batches(env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    """No process running yet; a projector started from it takes 50 records per batch."""
    with running_pipeline({**env, "HOOKLINE_PROJECTOR_BATCH": "50"}, tmp_path,
                          parts=()) as pipeline:
        yield pipeline


def _mid_backlog(database_url: str) -> int:
    checkpoint = projected(database_url).checkpoint
    assert checkpoint is not None, "nothing committed yet"
    assert BACKLOG // 2 <= checkpoint < LAST, f"checkpoint {checkpoint} is not mid-backlog"
    return checkpoint


def _restart_and_finish(pipeline: Pipeline, database_url: str,
                        backlog: list[dict[str, str]]) -> Process:
    projector = pipeline.start_projector()

    def caught_up() -> None:
        assert projected(database_url).checkpoint == LAST
    eventually(caught_up, timeout=90, interval=0.2)

    done = projected(database_url)
    count, total = expected(backlog)
    assert (done.events, done.distinct_ids, done.outcomes) == (
        BACKLOG, BACKLOG, {"applied": BACKLOG})
    assert (done.transactions, done.total) == (count, total)
    assert projector.alive
    return projector


def test_projector_killed_mid_backlog_projects_every_record_once_after_restart(
        backlog: list[dict[str, str]], small_batches: Pipeline, database_url: str) -> None:
    projector = small_batches.start_projector()
    eventually(lambda: _mid_backlog(database_url), timeout=60, interval=0.01)

    projector.kill()

    assert projector.popen is not None
    assert projector.popen.returncode == -9
    left_at = projected(database_url)
    assert left_at.checkpoint is not None
    assert left_at.checkpoint < LAST, "killed too late"
    assert left_at.events == left_at.checkpoint + 1  # nothing past the checkpoint survived
    _restart_and_finish(small_batches, database_url, backlog)


def test_projector_stopped_mid_backlog_exits_zero_and_a_restart_finishes_exactly_once(
        backlog: list[dict[str, str]], small_batches: Pipeline, database_url: str) -> None:
    projector = small_batches.start_projector()
    eventually(lambda: _mid_backlog(database_url), timeout=60, interval=0.01)

    assert projector.stop(timeout=30) == 0

    left_at = projected(database_url)
    assert left_at.checkpoint is not None
    assert left_at.checkpoint < LAST, "stopped too late"
    assert left_at.events == left_at.checkpoint + 1
    # the batch in hand was committed before the exit, and the log says where it stopped
    assert f"projector stopped after offset {left_at.checkpoint}" in projector.output()
    _restart_and_finish(small_batches, database_url, backlog)
