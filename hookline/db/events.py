"""The events table: one row per record of the log, as projected (its outcome and why)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
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


# what a record projected so left in the projection: nothing but its events row
WITHOUT_EFFECT = ("rejected", "ignored")
Projected = tuple[str, str | None, str]  # a row's (outcome, error, id)
_PROJECTED = ('SELECT "offset", outcome, error, id FROM events WHERE "partition" = %s '
              'AND "offset" = ANY(%s)')
_LOCKED = _PROJECTED + " FOR UPDATE"


def matching(conn: psycopg.Connection[Any], criteria: Mapping[str, Any],
             since: datetime | None, until: datetime | None) -> list[tuple[int, int, str]]:
    """(partition, offset, outcome) of the rows whose columns equal `criteria` (source, type,
    outcome) and received from `since` (inclusive) until `until` (exclusive), in log order."""
    where: list[sql.Composable] = [
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(value))
        for column, value in criteria.items()]
    if since is not None:
        where.append(sql.SQL("received_at >= {}").format(sql.Literal(since)))
    if until is not None:
        where.append(sql.SQL("received_at < {}").format(sql.Literal(until)))
    cursor = conn.execute(sql.SQL(
        'SELECT "partition", "offset", outcome FROM events WHERE {} '
        'ORDER BY "partition", "offset"').format(sql.SQL(" AND ").join(where or [sql.SQL("true")])))
    return [(int(p), int(o), str(outcome)) for p, o, outcome in cursor]


def projected(conn: psycopg.Connection[Any], partition: int, offsets: Sequence[int],
              lock: bool = False) -> dict[int, Projected]:
    """How each of the offsets of a partition was projected, by offset (those with a row);
    with `lock`, the rows stay locked until the transaction ends."""
    cursor = conn.execute(_LOCKED if lock else _PROJECTED, (partition, list(offsets)))
    return {int(offset): (str(outcome), error, str(id)) for offset, outcome, error, id in cursor}


def delete(conn: psycopg.Connection[Any], partition: int, offsets: Sequence[int]) -> None:
    """Remove the rows of the offsets, for records about to be projected again."""
    conn.execute('DELETE FROM events WHERE "partition" = %s AND "offset" = ANY(%s)',
                 (partition, list(offsets)))
