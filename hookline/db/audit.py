"""The operator audit trail: every statement on `operator_audit`, whoever writes it.

One row per operator action (a retry, a rejection, a reprocess…), written in the transaction
of the action itself, so a row says exactly what was done: no action without its row, no row
for an action that rolled back. Refused and failed attempts get a row of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast, get_args

import orjson
import psycopg
import sqlalchemy

log = logging.getLogger(__name__)

TABLE = "operator_audit"
Outcome = Literal["succeeded", "refused", "failed"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

_INSERT = ("INSERT INTO operator_audit (actor, action, targets, detail, outcome) "
           "VALUES (%s, %s, %s, %s::jsonb, %s) RETURNING id")


def record(conn: psycopg.Connection[Any] | sqlalchemy.Connection, actor: str, action: str,
           targets: Sequence[str] = (), detail: Mapping[str, Any] | None = None,
           outcome: Outcome = "succeeded") -> int:
    """Write one audit row in `conn`'s current transaction; its id.

    `actor` is a token's name or `cli:<OS user>`, never a token; `action` a dotted verb such
    as `outbox.retry`; `targets` the records acted on (`outbox:17`, `events:0:42`).
    """
    driver = _psycopg(conn)
    row = driver.execute(_INSERT, (actor, action, list(targets),
                                   orjson.dumps(dict(detail or {})).decode(), outcome)
                         ).fetchone()
    assert row is not None
    log.info("audit id=%d actor=%s action=%s outcome=%s targets=%d", row[0], actor, action,
             outcome, len(targets))
    return int(row[0])


def _psycopg(conn: psycopg.Connection[Any] | sqlalchemy.Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy one, in its transaction (the API's)."""
    if isinstance(conn, sqlalchemy.Connection):
        return cast(psycopg.Connection[Any], conn.connection.driver_connection)
    return conn
