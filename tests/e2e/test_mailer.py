"""The mailer against real SMTP servers that are down, refuse, or come back; the dev server."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
import requests

from hookline.db.outbox import Email, enqueue
from tests.mailbox import Mailbox, text_of
from tests.processes import Pipeline, eventually, free_port, running_pipeline

ROWS = 5


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def mail_only(env: dict[str, str], smtp_port: int, tmp_path: Path) -> Iterator[Pipeline]:
    """No ingest or projector: the test writes the outbox rows the projector would."""
    mail_env = {**env, "HOOKLINE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
                "HOOKLINE_MAIL_BACKOFF_BASE": "0.2", "HOOKLINE_MAIL_MAX_ATTEMPTS": "3"}
    with running_pipeline(mail_env, tmp_path, parts=()) as pipeline:
        yield pipeline


def context(n: int) -> dict[str, object]:
    return {"payment": None, "booking": {
        "reference": f"BK-{n}", "customer_name": f"Guest {n}", "destination": "Lalibela",
        "travel_date": "Monday 01 March 2027", "return_date": None, "travelers": 2,
        "total": "300.00 EUR", "expires_at": "22 November 2026 at 10:15 UTC"}}


def write_outbox(db: psycopg.Connection, count: int = ROWS) -> None:
    emails = [Email(f"bookings:msg-{n}", "booking_confirmation", f"BK-{n}",
                    f"guest{n}@example.com", context(n)) for n in range(count)]
    with db.transaction():
        enqueue(db, emails, datetime.now(UTC))


def outbox(db: psycopg.Connection) -> list[tuple[int, str, int, float | None, str | None]]:
    return db.execute(
        "SELECT id, status, attempts, "
        "extract(epoch FROM next_attempt_at - last_attempt_at)::float, last_error "
        "FROM email_outbox ORDER BY id").fetchall()


def metric(bind: str, name: str) -> float:
    text = requests.get(f"http://{bind}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def test_while_smtp_is_down_rows_retry_with_growing_delays_then_each_is_sent_once(
        env: dict[str, str], smtp_port: int, db: psycopg.Connection, tmp_path: Path) -> None:
    mail_env = {**env, "HOOKLINE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
                "HOOKLINE_MAIL_BACKOFF_BASE": "0.2", "HOOKLINE_MAIL_MAX_ATTEMPTS": "30"}
    with running_pipeline(mail_env, tmp_path, parts=()) as pipeline:
        mailer = pipeline.start_mailer()
        write_outbox(db)
        delays: dict[tuple[int, int], float] = {}  # (row, attempt) -> delay before the next

        def three_attempts_each() -> None:
            for row_id, status, attempts, delay, error in outbox(db):
                assert status == "failed"
                assert delay is not None
                assert error
                delays[(row_id, attempts)] = delay
            assert min(attempts for _, _, attempts, _, _ in outbox(db)) >= 3
        eventually(three_attempts_each, timeout=30, interval=0.05)

        for (row_id, attempt), delay in delays.items():
            later = [d for (r, a), d in delays.items() if r == row_id and a > attempt]
            assert all(delay < d for d in later), delays
        assert len({a for _, a in delays}) >= 3
        assert metric(mailer.env["HOOKLINE_MAILER_METRICS_BIND"],
                      "hookline_outbox_pending") == ROWS

        box = Mailbox(smtp_port).start()
        try:
            eventually(lambda: [r[1] for r in outbox(db)] == ["sent"] * ROWS or _not_yet(),
                       timeout=30)
            assert mailer.stop() == 0
        finally:
            box.stop()
    received = box.received()
    assert sorted(m["To"] for m in received) == [f"guest{n}@example.com" for n in range(ROWS)]
    assert len({m["Message-ID"] for m in received}) == ROWS
    assert text_of(received[0]).startswith("Dear Guest ")  # rendered at send time
    recorded = db.execute("SELECT subject, body_text FROM email_outbox ORDER BY id").fetchall()
    assert all(subject and "BK-" in subject and text for subject, text in recorded)


def test_rows_a_server_always_refuses_end_dead_after_the_configured_attempts(
        mail_only: Pipeline, smtp_port: int, db: psycopg.Connection) -> None:
    box = Mailbox(smtp_port, reject="550 5.7.1 relaying denied").start()
    try:
        mailer = mail_only.start_mailer()
        write_outbox(db)
        eventually(lambda: [r[1] for r in outbox(db)] == ["dead"] * ROWS or _not_yet(),
                   timeout=30)
        bind = mailer.env["HOOKLINE_MAILER_METRICS_BIND"]
        eventually(lambda: metric(bind, "hookline_outbox_dead") == ROWS or _not_yet())
        assert metric(bind, "hookline_emails_total") == ROWS * 3
        assert mailer.stop() == 0
    finally:
        box.stop()
    assert all(attempts == 3 and "550" in (error or "")
               for _, _, attempts, _, error in outbox(db))
    assert box.received() == []
    assert sorted(box.attempts.values()) == [3] * ROWS  # the same Message-ID each time


def test_the_development_server_keeps_each_message_as_a_file_and_prints_a_line(
        mail_only: Pipeline, tmp_path: Path) -> None:
    port, folder = free_port(), tmp_path / "mail"
    server = mail_only.start("devsmtp", "devsmtp", "--bind", f"127.0.0.1:{port}",
                             "--folder", str(folder))
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ("a@example.com", "b@example.com",
                                                          "Hello from the test")
    message.set_content("body")

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            smtp.send_message(message)
    eventually(send, timeout=30)

    files = list(folder.glob("*.eml"))
    assert len(files) == 1
    assert b"Subject: Hello from the test" in files[0].read_bytes()
    assert server.stop() == 0
    assert "to=b@example.com subject='Hello from the test'" in server.output()


def _not_yet() -> bool:
    raise AssertionError("not yet")
