"""Bookings end to end: signed webhooks in, bookings joined with payments, emails out over SMTP."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import requests

from hookline.senders.signatures import sign_standard_webhooks
from tests.mailbox import Mailbox, html_of, text_of
from tests.processes import (
    Pipeline,
    Process,
    eventually,
    running_pipeline,
    scalar,
)

SECRET = "whsec_" + base64.b64encode(b"bookings-test-secret-32-bytes!!!").decode()


@pytest.fixture
def mail_env(env: dict[str, str], mailbox: Mailbox) -> dict[str, str]:
    return {**env, "HOOKLINE_BOOKINGS_SECRETS": SECRET, "HOOKLINE_SMTP_URL": mailbox.url,
            "HOOKLINE_MAIL_BACKOFF_BASE": "0.2", "HOOKLINE_SCHEDULE_INTERVAL": "1"}


@pytest.fixture
def shop(mail_env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    """ingest, projector and one mailer."""
    with running_pipeline(mail_env, tmp_path, parts=("ingest", "projector")) as pipeline:
        pipeline.start_mailer()
        yield pipeline


def post_booking(pipeline: Pipeline, booking: dict[str, Any], kind: str = "booking.created",
                 msg_id: str | None = None, times: int = 1) -> None:
    body = orjson.dumps({"type": kind, "booking": booking})
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    for _ in range(times):
        now = int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(now),
                   "webhook-signature": sign_standard_webhooks(SECRET, msg_id, now, body)}
        answer = pipeline.http.post(f"{pipeline.ingest_url}/v1/webhooks/bookings", data=body,
                                    headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text


def post_payment(pipeline: Pipeline, tx: str, reference: str | None, status: str,
                 amount: str = "250.00", times: int = 1, reason: str | None = None) -> None:
    body = {"transaction_id": tx, "source_account": "acct-guest",
            "destination_account": "acct-hotel", "amount": amount, "currency": "EUR",
            "booking_reference": reference, "status": status, "failure_reason": reason}
    for _ in range(times):
        answer = pipeline.post("transactions", body)
        assert answer.status_code == 202, answer.text


def booking(reference: str, email: str, name: str) -> dict[str, Any]:
    return {"reference": reference, "customer": {"email": email, "name": name},
            "destination": "Bahir Dar", "travel_date": "2026-10-02", "return_date": "2026-10-09",
            "travelers": 3, "total_amount": "250.00", "currency": "EUR",
            "created_at": datetime.now(UTC).isoformat()}


def booking_row(db: psycopg.Connection, reference: str) -> tuple[Any, ...]:
    row = db.execute("SELECT status, late_payment, amount_mismatch, confirmed_at IS NOT NULL "
                     "FROM bookings WHERE reference = %s", (reference,)).fetchone()
    assert row is not None, f"no booking {reference}"
    return tuple(row)


def templates(db: psycopg.Connection, reference: str) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT template FROM email_outbox WHERE booking_reference = %s ORDER BY template",
        (reference,))]


def all_sent(db: psycopg.Connection, count: int) -> None:
    statuses = db.execute("SELECT status, count(*) FROM email_outbox GROUP BY status").fetchall()
    assert dict(statuses) == {"sent": count}


def test_each_customer_email_arrives_once_though_every_webhook_came_three_times(
        shop: Pipeline, mailbox: Mailbox, db: psycopg.Connection) -> None:
    post_booking(shop, booking("BK-ALICE", "alice@example.com", "Alice Abebe"), times=3)
    eventually(lambda: len(mailbox.to("alice@example.com")) == 1 or _not_yet())
    post_payment(shop, "tx-alice-1", "BK-ALICE", "failed", times=3, reason="insufficient funds")
    eventually(lambda: len(mailbox.to("alice@example.com")) == 2 or _not_yet())
    post_payment(shop, "tx-alice-2", "BK-ALICE", "succeeded", times=3)

    eventually(lambda: all_sent(db, 3), timeout=30)
    assert booking_row(db, "BK-ALICE") == ("confirmed", False, False, True)
    received = mailbox.to("alice@example.com")
    assert len(received) == len(mailbox.received()) == 3
    assert len({m["Message-ID"] for m in received}) == 3
    first, failure, confirmation = received
    assert "please pay before" in first["Subject"]
    assert "did not go through" in failure["Subject"]
    assert "confirmed" in confirmation["Subject"]
    for message in received:
        for part in (text_of(message), html_of(message)):
            assert "Alice Abebe" in part
            assert "Bahir Dar" in part
            assert "250.00 EUR" in part
    assert "insufficient funds" in text_of(failure)
    outcomes: dict[str, int] = dict(
        db.execute("SELECT outcome, count(*) FROM events GROUP BY outcome").fetchall())
    assert outcomes == {"applied": 3, "duplicate": 6}


def test_a_payment_before_its_booking_ends_as_a_booking_before_its_payment(
        shop: Pipeline, mailbox: Mailbox, db: psycopg.Connection) -> None:
    post_booking(shop, booking("BK-FIRST", "first@example.com", "Bekele"))
    post_payment(shop, "tx-first", "BK-FIRST", "succeeded")
    post_payment(shop, "tx-later", "BK-LATER", "succeeded")
    eventually(lambda: scalar(db, "SELECT count(*) FROM transactions") == 2 or _not_yet())
    post_booking(shop, booking("BK-LATER", "later@example.com", "Bekele"))

    eventually(lambda: all_sent(db, 4), timeout=30)
    assert booking_row(db, "BK-LATER") == booking_row(db, "BK-FIRST") == (
        "confirmed", False, False, True)
    assert templates(db, "BK-LATER") == templates(db, "BK-FIRST") == [
        "booking_confirmation", "payment_confirmation"]
    subjects = {to: sorted(m["Subject"].replace(to.split("@")[0].upper(), "")
                           for m in mailbox.to(f"{to}@example.com")) for to in ("first", "later")}
    assert subjects["first"] == subjects["later"]
    assert len(subjects["first"]) == 2


def test_unpaid_bookings_expire_once_through_the_log_with_two_schedulers_and_two_mailers(
        mail_env: dict[str, str], mailbox: Mailbox, db: psycopg.Connection,
        tmp_path: Path) -> None:
    env = {**mail_env, "HOOKLINE_BOOKING_TTL": "2", "HOOKLINE_PAYMENT_TIMEOUT": "2"}
    mailbox.delay = 0.2  # a slow server: each mailer holds its claimed rows for a while
    with running_pipeline(env, tmp_path, parts=("ingest", "projector")) as pipeline:
        mailers = [pipeline.start_mailer("mailer-1"), pipeline.start_mailer("mailer-2")]
        schedulers = [pipeline.start_scheduler("scheduler-1"),
                      pipeline.start_scheduler("scheduler-2")]
        for process in [*mailers, *schedulers]:  # all four up before the first booking
            eventually(partial(_serving, process), timeout=30)
        references = [f"BK-{n:02d}" for n in range(20)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda r: post_booking(
                pipeline, booking(r, f"{r.lower()}@example.com", f"Guest {r}")), references))
        post_payment(pipeline, "tx-stuck", None, "pending")

        def all_expired() -> None:
            assert scalar(db, "SELECT count(*) FROM bookings WHERE status = 'expired'") == 20
            assert scalar(db, "SELECT status FROM transactions WHERE transaction_id = 'tx-stuck'"
                          ) == "timed_out"
        eventually(all_expired, timeout=40)

        post_payment(pipeline, "tx-late", "BK-00", "succeeded")
        eventually(lambda: booking_row(db, "BK-00")[1] or _not_yet())
        eventually(lambda: all_sent(db, 20), timeout=30)
        for mailer in mailers:  # the work was shared: both claimed rows at the same time
            assert "sent outbox" in mailer.output(), mailer.output()
        fired = sum(_metric(_metrics_bind(p), "hookline_timers_fired_total") for p in schedulers)
        assert all(process.stop() == 0 for process in [*mailers, *schedulers])

    assert booking_row(db, "BK-00") == ("expired", True, False, False)
    applied = db.execute("SELECT id, count(*) FROM events WHERE source = 'scheduler' AND "
                         "outcome = 'applied' GROUP BY id").fetchall()
    assert sorted(applied) == sorted(
        [(f"scheduler:booking.expired:{r}", 1) for r in references]
        + [("scheduler:payment.timed_out:transactions:tx-stuck", 1)])
    appended = scalar(db, "SELECT count(*) FROM events WHERE source = 'scheduler'")
    assert fired == appended  # every record a scheduler appended, and no other, is in the log
    assert templates(db, "BK-00") == ["booking_confirmation"]  # no confirmation for a late payment
    received = mailbox.received()
    assert sorted(m["To"] for m in received) == sorted(f"{r.lower()}@example.com"
                                                       for r in references)
    assert len({m["Message-ID"] for m in received}) == 20


def _metrics_bind(process: Process) -> str:
    env = process.env
    return env.get("HOOKLINE_MAILER_METRICS_BIND") or env["HOOKLINE_SCHEDULER_METRICS_BIND"]


def _serving(process: Process) -> None:
    requests.get(f"http://{_metrics_bind(process)}/metrics", timeout=2).raise_for_status()


def _metric(bind: str, name: str) -> float:
    text = requests.get(f"http://{bind}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _not_yet() -> bool:
    raise AssertionError("not yet")
