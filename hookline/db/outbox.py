"""The email outbox table: every statement on `email_outbox`, whoever writes or reads it.

An email is owed while it is `pending` or `failed`; `dead` once given up, `sent` once the SMTP
server took it. Rows are written with the projection change that caused them, claimed by the
mailer, and put back to pending by an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from hookline.db import bulk

log = logging.getLogger(__name__)

TABLE = "email_outbox"
STATUSES = ("pending", "sent", "failed", "dead")
OWED = ("pending", "failed")
RETRYABLE = ("dead", "failed")
ENQUEUED = ("event_id", "template", "booking_reference", "recipient", "context",
            "next_attempt_at", "created_at")
LARGE = ("context", "body_text", "body_html")  # left out of what operators list
SHOWN = ("id", "event_id", "template", "booking_reference", "recipient", "subject", "status",
         "attempts", "next_attempt_at", "last_attempt_at", "last_error", "sent_at", "created_at")

_SHOWN = sql.SQL(", ").join(map(sql.Identifier, SHOWN))
_CLAIM = (
    "SELECT id, template, recipient, context, attempts "
    "FROM email_outbox WHERE status IN ('pending', 'failed') AND next_attempt_at <= now() "
    "ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
)
_SENT = (
    "UPDATE email_outbox SET status = 'sent', attempts = attempts + 1, last_error = NULL, "
    "sent_at = clock_timestamp(), last_attempt_at = clock_timestamp(), "
    "subject = %s, body_text = %s, body_html = %s WHERE id = %s"
)
_FAILED = (
    "UPDATE email_outbox SET status = %s, attempts = %s, last_error = %s, "
    "last_attempt_at = clock_timestamp(), "
    "next_attempt_at = clock_timestamp() + make_interval(secs => %s) WHERE id = %s"
)
# only rows not yet sent: the partial index email_outbox_open holds exactly those
_DEPTH = (
    "SELECT count(*) FILTER (WHERE status = 'pending'), "
    "count(*) FILTER (WHERE status = 'failed'), "
    "count(*) FILTER (WHERE status = 'dead'), "
    "extract(epoch FROM now() - min(created_at) FILTER (WHERE status IN ('pending', 'failed'))), "
    "extract(epoch FROM min(next_attempt_at) FILTER (WHERE status IN ('pending', 'failed')) "
    "- now()) "
    "FROM email_outbox WHERE status <> 'sent'"
)
_SENT_COUNT = "SELECT count(*) FROM email_outbox WHERE status = 'sent'"
_RETRY_ONE = sql.SQL(
    "UPDATE email_outbox SET status = 'pending', attempts = 0, next_attempt_at = now() "
    "WHERE id = %s AND status IN ('dead', 'failed') RETURNING {}").format(_SHOWN)
_RETRY_DEAD = ("UPDATE email_outbox SET status = 'pending', attempts = 0, next_attempt_at = now() "
               "WHERE status = 'dead' RETURNING id")
_STATUS_OF = "SELECT status FROM email_outbox WHERE id = %s"
_OF_BOOKING = sql.SQL(
    "SELECT {} FROM email_outbox WHERE booking_reference = %s ORDER BY id").format(_SHOWN)


@dataclass(frozen=True, slots=True)
class Email:
    """One outbox row: the record it answers (`event_id`), the template and what fills it."""

    event_id: str
    template: str
    booking_reference: str
    recipient: str
    context: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A row the mailer claimed, as it needs it to send."""

    id: int
    template: str
    recipient: str
    context: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class Depth:
    """The rows not yet sent: how many of each status, how long the oldest owed one has
    waited since it was written, and in how long the next one falls due (None: none owed)."""

    pending: int
    failed: int
    dead: int
    oldest_owed_seconds: float | None
    next_due_seconds: float | None

    @property
    def owed(self) -> int:
        return self.pending + self.failed


class EmailMissing(LookupError):
    """No outbox row has this id."""


class NotRetryable(Exception):
    """Only a dead or failed email can be retried; this one is in another state."""

    def __init__(self, email_id: int, status: str) -> None:
        super().__init__(f"email {email_id} is {status}: only a dead or failed email can be "
                         "retried")
        self.status = status


def enqueue(conn: psycopg.Connection[Any], emails: Sequence[Email], now: datetime) -> None:
    """Add rows due now; a record projected again never adds a second row."""
    if not emails:
        return
    bulk.upsert(conn, TABLE, ENQUEUED, ["event_id", "template"], [
        (e.event_id, e.template, e.booking_reference, e.recipient,
         orjson.dumps(e.context).decode(), now, now) for e in emails], update=False)


def claim(conn: psycopg.Connection[Any], limit: int) -> list[Outgoing]:
    """Up to `limit` due rows, oldest due first, locked until the transaction ends; rows
    another mailer holds are skipped."""
    with conn.cursor(row_factory=class_row(Outgoing)) as cursor:
        return cursor.execute(_CLAIM, (limit,)).fetchall()


def mark_sent(conn: psycopg.Connection[Any], email_id: int, subject: str, text: str,
              html: str) -> None:
    conn.execute(_SENT, (subject, text, html, email_id))


def mark_failed(conn: psycopg.Connection[Any], email_id: int, status: str, attempts: int,
                error: str, delay: float) -> None:
    """`failed` (due again after `delay` seconds) or `dead`, with the attempt's error."""
    conn.execute(_FAILED, (status, attempts, error, delay, email_id))


def depth(conn: psycopg.Connection[Any]) -> Depth:
    row = conn.execute(_DEPTH).fetchone()
    assert row is not None
    pending, failed, dead, oldest, due = row
    return Depth(pending, failed, dead, None if oldest is None else float(oldest),
                 None if due is None else float(due))


def sent_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_SENT_COUNT).fetchone()
    return 0 if row is None else int(row[0])


def of_booking(conn: psycopg.Connection[Any], reference: str) -> list[dict[str, Any]]:
    """A booking's emails, oldest first, without their context and bodies."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(_OF_BOOKING, (reference,)).fetchall()


def retry(conn: psycopg.Connection[Any], email_id: int) -> dict[str, Any]:
    """A dead or failed email becomes pending, due now, with its attempts counted anew."""
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(_RETRY_ONE, (email_id,)).fetchone()
    if row is not None:
        log.info("outbox id=%d is pending again", email_id)
        return row
    found = conn.execute(_STATUS_OF, (email_id,)).fetchone()
    if found is None:
        raise EmailMissing(f"no email {email_id} in the outbox")
    raise NotRetryable(email_id, found[0])


def retry_dead(conn: psycopg.Connection[Any]) -> list[int]:
    """Every dead email becomes pending again; their ids."""
    ids = [int(row[0]) for row in conn.execute(_RETRY_DEAD)]
    log.info("%d dead outbox rows are pending again", len(ids))
    return sorted(ids)


def compare(conn: psycopg.Connection[Any], fresh: str, live: str,
            examples: int) -> tuple[int, int, list[str]]:
    """Between the outbox of schema `fresh` and that of `live`: rows only `fresh` has, rows
    only `live` has, and the first few of the former as 'event_id template'."""
    row = conn.execute(sql.SQL(
        "SELECT count(*) FILTER (WHERE l.id IS NULL), count(*) FILTER (WHERE r.id IS NULL), "
        "(array_agg(r.event_id || ' ' || r.template ORDER BY r.id) FILTER (WHERE l.id IS NULL)"
        ")[1:{n}] "
        "FROM {fresh} AS r FULL JOIN {live} AS l "
        "ON r.event_id = l.event_id AND r.template = l.template").format(
            fresh=sql.Identifier(fresh, TABLE), live=sql.Identifier(live, TABLE),
            n=sql.Literal(examples))).fetchone()
    assert row is not None
    owed, unknown, first = row
    return owed, unknown, list(first or [])


def enqueued_at(conn: psycopg.Connection[Any], moment: datetime,
                event_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """(event_id, template, recipient) of the rows a projection at `moment` added for these
    records, in the order added."""
    return [(str(e), str(t), str(r)) for e, t, r in conn.execute(
        "SELECT event_id, template, recipient FROM email_outbox WHERE created_at = %s "
        "AND event_id = ANY(%s) ORDER BY id", (moment, list(event_ids)))]
