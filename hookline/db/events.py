"""The events table: one row per record of the log, as projected (its outcome and why)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

COLUMNS = ("offset", "partition", "id", "source", "type", "subject", "received_at",
           "projected_at", "outcome", "error", "payload")
_COPY = sql.SQL("COPY events ({}) FROM STDIN").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))


def already_projected(conn: psycopg.Connection[Any], ids: Sequence[str]) -> set[str]:
    """Which of the envelope ids a record projected before carried (duplicates aside)."""
    cursor = conn.execute(
        "SELECT id FROM events WHERE id = ANY(%s) AND outcome <> 'duplicate'", (list(ids),))
    return {row[0] for row in cursor}


def insert(conn: psycopg.Connection[Any], rows: Iterable[Sequence[Any]]) -> None:
    """Rows in the order of COLUMNS, in one COPY."""
    with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
        for row in rows:
            copy.write_row(row)


def outcome(conn: psycopg.Connection[Any], partition: int, offset: int) -> str | None:
    """How the record at (partition, offset) was projected; None when no row holds it."""
    row = conn.execute('SELECT outcome FROM events WHERE "partition" = %s AND "offset" = %s',
                       (partition, offset)).fetchone()
    return None if row is None else str(row[0])
