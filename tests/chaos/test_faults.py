"""Faults under a steady load of signed webhooks: whatever breaks, every delivery answered 202
is in the log and projected exactly once, every email is sent at most once, nothing refused
gets in. Each scenario records its figures (see conftest and docs/reliability.md)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from tests.chaos import figures
from tests.chaos.harness import BOUND, Chaos, Figures, bounded, workers
from tests.faults.support import PrivateBroker, PrivatePostgres
from tests.processes import eventually

pytestmark = pytest.mark.disruptive
RABBITMQ_DOWN = 10.0
POSTGRES_DOWN = 30.0
SMTP_REFUSING = 20.0
MEMORY_ALARM = 8.0  # under the client's 30 s blocked-connection timeout
PROJECTOR_KILLS = 10


def pause(seconds: float) -> None:
    """Let the load run through a fault for a while (pacing, not waiting for a result)."""
    threading.Event().wait(seconds)


def keep(done: Figures) -> Figures:
    figures.RECORDED[done.scenario] = done
    return done


def test_rabbitmq_stopped_twice_for_10_s_loses_nothing_and_doubles_nothing(
        chaos: Chaos, broker: PrivateBroker) -> None:
    with chaos.load():
        for outage in range(2):
            broker.stop_app()
            pause(RABBITMQ_DOWN)
            broker.start_app()
            fault_end = time.monotonic()
            if outage == 0:
                pause(3)
        recovery = chaos.recovered_after(fault_end)
    done = keep(chaos.settle(recovery, "RabbitMQ stopped for 10 s, twice"))
    assert done.unavailable > 0, "the load never met the outage"
    assert chaos.pipeline.processes["ingest"].alive


def test_postgresql_restarted_under_load_keeps_ingest_accepting_and_projects_once(
        chaos: Chaos, cluster: PrivatePostgres) -> None:
    with chaos.load():
        pause(2)
        down = time.monotonic()
        cluster.stop()
        cluster.start()
        up = time.monotonic()
        recovery = chaos.recovered_after(up)
    keep(chaos.settle(recovery, "PostgreSQL restarted"))
    kept_accepting(chaos, down, up)


def test_postgresql_unreachable_for_30_s_keeps_ingest_accepting_and_projects_once(
        chaos: Chaos, cluster: PrivatePostgres) -> None:
    with chaos.load():
        down = time.monotonic()
        cluster.stop()
        pause(POSTGRES_DOWN)
        cluster.start()
        up = time.monotonic()
        recovery = chaos.recovered_after(up)
    keep(chaos.settle(recovery, "PostgreSQL unreachable for 30 s"))
    kept_accepting(chaos, down, up)
    assert all(p.alive for p in chaos.pipeline.processes.values()), "a process gave up"


def kept_accepting(chaos: Chaos, start: float, end: float) -> None:
    """ingest never touches the database: every valid delivery sent while it was away was
    accepted."""
    during = chaos.senders.answered_between(start, end)
    assert during, "no valid delivery was sent during the outage"
    assert set(during) == {202}, f"answers to valid deliveries during the outage: {during}"


def test_projector_killed_10_times_at_random_moments_projects_every_record_once(
        chaos: Chaos) -> None:
    moments = random.Random()
    kills = 0
    with chaos.load():
        for _ in range(PROJECTOR_KILLS):
            eventually(_projected_past(chaos, _checkpoint(chaos)), timeout=30)
            pause(moments.uniform(0, 0.5))
            projector = chaos.pipeline.processes["projector"]
            projector.kill()
            assert projector.popen is not None
            kills += projector.popen.returncode == -signal.SIGKILL
            chaos.pipeline.start_projector()
        recovery = chaos.recovered_after(time.monotonic())
    done = keep(chaos.settle(recovery, "projector killed (SIGKILL) 10 times"))
    assert kills == PROJECTOR_KILLS
    assert done.projected > 0
    kept_accepting(chaos, 0, time.monotonic())


def _checkpoint(chaos: Chaos) -> int:
    with psycopg.connect(chaos.settings.psycopg_url, autocommit=True) as conn:
        row = conn.execute("SELECT last_offset FROM consumer_offsets "
                           "WHERE consumer = 'projector'").fetchone()
    return -1 if row is None else int(row[0])


def _projected_past(chaos: Chaos, offset: int) -> Callable[[], None]:
    def check() -> None:
        assert _checkpoint(chaos) > offset, "the projector has not committed since its start"
    return check


def test_a_gunicorn_worker_killed_under_load_gives_no_202_that_is_not_in_the_log(
        chaos: Chaos) -> None:
    ingest = chaos.pipeline.processes["ingest"]
    assert ingest.popen is not None
    with chaos.load():
        victim = workers(ingest.popen.pid)[0]
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: _replaced(ingest.popen.pid if ingest.popen else 0, victim),
                   timeout=30)
        recovery = chaos.recovered_after(time.monotonic())
        pause(3)
    done = keep(chaos.settle(recovery, "a gunicorn worker killed (SIGKILL)"))
    assert f"Worker (pid:{victim}) was sent SIGKILL" in ingest.output()
    assert done.accepted > 0


def _replaced(master: int, victim: int) -> None:
    alive = workers(master)
    assert victim not in alive, "the killed worker is still listed"
    assert len(alive) == 2, f"workers: {alive}"


def test_smtp_refusing_for_20_s_then_accepting_sends_every_email_once(chaos: Chaos) -> None:
    with chaos.load():
        pause(1)
        chaos.mailbox.reject = "451 4.3.0 not accepting mail for a while"
        pause(SMTP_REFUSING)
        chaos.mailbox.reject = None
        recovery = chaos.recovered_after(time.monotonic())
    done = keep(chaos.settle(recovery, "SMTP server refusing for 20 s"))
    refused = sum(chaos.mailbox.attempts.values()) - len(chaos.mailbox.received())
    assert refused > 0, "no email met the refusing server"
    assert done.emails > 0
    kept_accepting(chaos, 0, time.monotonic())


def test_rabbitmq_memory_alarm_answers_503_within_the_bound_and_never_hangs_a_request(
        chaos: Chaos, broker: PrivateBroker) -> None:
    try:
        with chaos.load():
            broker.ctl("set_vm_memory_high_watermark", "0.0000001")
            eventually(lambda: _refusing(chaos), timeout=30)
            pause(MEMORY_ALARM)
            broker.ctl("set_vm_memory_high_watermark", "0.4")
            recovery = chaos.recovered_after(time.monotonic())
    finally:
        broker.ctl("set_vm_memory_high_watermark", "0.4")
    during = list(chaos.senders.attempts)
    done = keep(chaos.settle(recovery, "RabbitMQ memory alarm (publishers blocked)"))
    assert done.unavailable > 0
    bounded(during)


def _refusing(chaos: Chaos) -> None:
    recent = chaos.senders.attempts[-20:]
    assert any(a.status == 503 for a in recent), "ingest still accepts"
    assert all(a.seconds < BOUND + 3 for a in recent)
