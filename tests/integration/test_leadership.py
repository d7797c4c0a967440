"""The advisory lock behind standby processes, against the real PostgreSQL."""

from __future__ import annotations

import threading
import time

import psycopg

from hookline.config import Settings
from hookline.db.locks import lock_key
from hookline.lifecycle import Stopper
from hookline.processes.leadership import Leadership
from tests.processes import eventually, scalar

LOCK_SESSION = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'hookline demo lock' "
                "AND datname = current_database()")


def test_lock_keys_are_stable_and_differ_between_names() -> None:
    assert lock_key("projector") == lock_key("projector")
    assert lock_key("projector") != lock_key("scheduler")
    assert -(2**63) <= lock_key("projector") < 2**63


def test_a_standby_acquires_within_a_poll_once_the_leader_releases(settings: Settings) -> None:
    leader, stopper = Leadership(settings, "demo", Stopper()), Stopper()
    standby = Leadership(settings, "demo", stopper)
    assert leader.acquire()
    acquired = threading.Event()

    def wait_for_the_lock() -> None:
        if standby.acquire():
            acquired.set()
    waiting = threading.Thread(target=wait_for_the_lock, daemon=True)
    waiting.start()
    try:
        assert not acquired.wait(2.5), "the standby took a lock that is held"
        assert not standby.leading
        released_at = time.monotonic()
        leader.release()
        assert acquired.wait(5)
        assert time.monotonic() - released_at < 2.0
        assert standby.leading
        assert not leader.leading
    finally:
        stopper.set()
        waiting.join(5)
        standby.release()


def test_a_stopped_standby_gives_up_waiting(settings: Settings) -> None:
    leader, stopper = Leadership(settings, "demo", Stopper()), Stopper()
    assert leader.acquire()
    stopper.set()
    assert Leadership(settings, "demo", stopper).acquire() is False
    leader.release()


def test_a_leader_whose_session_was_taken_over_steps_down(
        settings: Settings, db: psycopg.Connection) -> None:
    leader = Leadership(settings, "demo", Stopper(), poll=1.0)
    assert leader.acquire()
    # its session ends (an admin, a network cut) and another process takes the lock meanwhile
    db.execute("SELECT pg_terminate_backend(%s)", (scalar(db, LOCK_SESSION),))
    db.execute("SET lock_timeout = '5s'")
    db.execute("SELECT pg_advisory_lock(%s)", (lock_key("demo"),))

    def stepped_down() -> None:
        assert not leader.leading
    eventually(stepped_down, timeout=5)
    leader.release()


def test_a_leader_whose_session_dropped_retakes_the_lock_when_no_one_else_has(
        settings: Settings, db: psycopg.Connection) -> None:
    leader = Leadership(settings, "demo", Stopper(), poll=0.2)
    assert leader.acquire()
    dropped = scalar(db, LOCK_SESSION)
    db.execute("SELECT pg_terminate_backend(%s)", (dropped,))

    def retaken() -> None:
        session = scalar(db, LOCK_SESSION)
        assert session not in (None, dropped)
        assert scalar(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                          "AND granted AND pid = %s", session) == 1
    eventually(retaken, timeout=5)
    assert leader.leading
    leader.release()
