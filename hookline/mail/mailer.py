"""The outbox's delivery round: claim due rows, render, send over SMTP, mark each sent, or
failed to retry with backoff, or dead once given up (`hookline mail` runs the rounds:
hookline/processes/mailer.py).

HOOKLINE_SMTP_URL forms:
  smtp://host:25                          plain SMTP
  smtp://user:password@host:587?starttls=true   upgrade with STARTTLS, then log in
  smtps://user:password@host:465          TLS from the first byte
User and password are percent-decoded. Rows are claimed with FOR UPDATE SKIP LOCKED and stay
locked until their result is committed, so several mailers never send the same row. A mailer
that loses the database between the SMTP answer and the commit remembers what it sent and
records it, without sending it again, once the database is back; one killed in that moment
sends that row again, with the same Message-ID.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from jinja2 import TemplateError
from prometheus_client import Counter, Gauge
from tenacity import (
    RetryCallState,
    wait_exponential_jitter,
)

from hookline.config import Settings
from hookline.db import outbox
from hookline.db.connection import Database
from hookline.db.outbox import Outgoing
from hookline.mail.outbox import Rendered, render

log = logging.getLogger(__name__)
BATCH = 10
BACKOFF_CAP_SECONDS = 6 * 3600.0
SMTP_TIMEOUT_SECONDS = 20.0
GAUGE_SECONDS = 5.0

EMAILS = Counter("hookline_emails", "Delivery attempts by template and result.",
                 ["template", "result"])
OUTBOX_PENDING = Gauge("hookline_outbox_pending", "Outbox rows not yet sent and not dead.")
OUTBOX_DEAD = Gauge("hookline_outbox_dead", "Outbox rows given up after the last attempt.")
OUTBOX_OLDEST_PENDING = Gauge("hookline_outbox_oldest_pending_seconds",
                              "Age of the oldest outbox row not yet sent and not dead.")

@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        implicit = parts.scheme == "smtps"
        flag = parse_qs(parts.query).get("starttls", ["false"])[-1].lower()
        return cls(
            host=parts.hostname or "localhost", port=parts.port or (465 if implicit else 25),
            implicit_tls=implicit, starttls=not implicit and flag in {"1", "true", "yes"},
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, context=_tls(),
                                                  timeout=SMTP_TIMEOUT_SECONDS)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT_SECONDS)
        try:
            if self.starttls:
                smtp.starttls(context=_tls())
            if self.username is not None:
                smtp.login(self.username, self.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


class _Session:
    """One SMTP connection for a batch, opened on first use; once unreachable, stays so."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server
        self._smtp: smtplib.SMTP | None = None
        self._unreachable: Exception | None = None

    def send(self, message: EmailMessage) -> None:
        if self._unreachable is not None:
            raise self._unreachable
        if self._smtp is None:
            try:
                self._smtp = self._server.connect()
            except (smtplib.SMTPException, OSError) as exc:
                self._unreachable = exc
                raise
        try:
            self._smtp.send_message(message)
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()
            raise

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


class Mailer:
    def __init__(self, settings: Settings) -> None:
        if settings.smtp_url is None:
            raise ValueError("HOOKLINE_SMTP_URL is not set")
        self.settings = settings
        self.server = SmtpServer.from_url(settings.smtp_url)
        self.domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"
        base = settings.mail_backoff_base
        self.backoff = wait_exponential_jitter(multiplier=base, max=BACKOFF_CAP_SECONDS,
                                               jitter=base / 2)
        self._gauges_at = 0.0
        self._unrecorded: dict[int, Rendered] = {}  # sent, the commit saying so not done yet

    def deliver_due(self, db: Database) -> float | None:
        """One round through `db`, and the depth gauges when idle or every few seconds. When
        idle (fewer rows were due than a round takes): the seconds until the next falls due."""
        claimed = db.run(self._round)
        if claimed < BATCH or time.monotonic() - self._gauges_at > GAUGE_SECONDS:
            due_in = db.run(self._gauges)
            if claimed < BATCH:
                return due_in
        return None

    def _round(self, conn: psycopg.Connection[Any]) -> int:
        """Claim a few due rows, send them, record each result; commit once."""
        session = _Session(self.server)
        try:
            with conn.transaction():
                rows = outbox.claim(conn, BATCH)
                for row in rows:
                    self._deliver(conn, session, row)
            self._unrecorded.clear()  # committed: every send is on record
        finally:
            session.close()
        return len(rows)

    def _deliver(self, conn: psycopg.Connection[Any], session: _Session, row: Outgoing) -> None:
        rendered = self._unrecorded.get(row.id)
        if rendered is None:
            try:
                rendered = render(row.template, row.context)
                session.send(self._message(row, rendered))
            except (smtplib.SMTPException, OSError, ValueError, TemplateError) as exc:
                self._failed(conn, row, exc)
                return
            self._unrecorded[row.id] = rendered
            EMAILS.labels(row.template, "sent").inc()
            log.info("sent outbox id=%d template=%s attempt=%d", row.id, row.template,
                     row.attempts + 1)
        outbox.mark_sent(conn, row.id, rendered.subject, rendered.text, rendered.html)

    def _failed(self, conn: psycopg.Connection[Any], row: Outgoing, exc: Exception) -> None:
        attempts, error = row.attempts + 1, _describe(exc)
        if attempts >= self.settings.mail_max_attempts:
            status, delay = "dead", 0.0
            log.error("gave up on outbox id=%d template=%s after %d attempts: %s",
                      row.id, row.template, attempts, error)
        else:
            status, delay = "failed", self.backoff(_attempt(attempts))
            log.warning("outbox id=%d template=%s attempt %d failed (%s); retrying in %.1f s",
                        row.id, row.template, attempts, error, delay)
        outbox.mark_failed(conn, row.id, status, attempts, error, delay)
        EMAILS.labels(row.template, status).inc()

    def _message(self, row: Outgoing, rendered: Rendered) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = row.recipient
        message["Subject"] = rendered.subject
        message["Date"] = formatdate(usegmt=True)
        # the same row always carries the same id, so a receiver can drop a resend
        message["Message-ID"] = f"<outbox.{row.id}@{self.domain}>"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message

    def _gauges(self, conn: psycopg.Connection[Any]) -> float:
        """Refresh the depth gauges; seconds until the next row falls due (1 when none)."""
        depth = outbox.depth(conn)
        OUTBOX_PENDING.set(depth.owed)
        OUTBOX_DEAD.set(depth.dead)
        OUTBOX_OLDEST_PENDING.set(depth.oldest_owed_seconds or 0.0)
        self._gauges_at = time.monotonic()
        return 1.0 if depth.next_due_seconds is None else depth.next_due_seconds


@functools.cache
def _tls() -> ssl.SSLContext:
    """Built once: loading the trust store costs tens of milliseconds."""
    return ssl.create_default_context()


def _attempt(number: int) -> RetryCallState:
    """The part of tenacity's retry state its wait strategies read."""
    return cast(RetryCallState, SimpleNamespace(attempt_number=number))


def _describe(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return f"{exc.smtp_code} {text}"[:1000]
    return f"{type(exc).__name__}: {exc}"[:1000]
