"""Writing many rows in one round trip: COPY into a staging table, then one INSERT … SELECT."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql


def upsert(conn: psycopg.Connection[Any], table: str, columns: Sequence[str],
           key: Sequence[str], rows: Iterable[Sequence[Any]], update: bool = True) -> None:
    """Insert rows, or (with `update`) overwrite the rows whose key exists; do nothing on
    conflict otherwise. Keys must be unique within `rows` when updating."""
    stage = sql.Identifier(f"stage_{table}")
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    # a temporary table per connection, created on first use, emptied after each use
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {names} FROM {table} WITH NO DATA"
    ).format(
            stage=stage, names=names, table=sql.Identifier(table)))
    with conn.cursor() as cursor, cursor.copy(
            sql.SQL("COPY {stage} ({names}) FROM STDIN").format(stage=stage, names=names)
    ) as copy:
        for row in rows:
            copy.write_row(row)
    conn.execute(sql.SQL(
        "INSERT INTO {table} ({names}) SELECT {names} FROM {stage} "
        "ON CONFLICT ({key}) {action}").format(
            table=sql.Identifier(table), names=names, stage=stage,
            key=sql.SQL(", ").join(map(sql.Identifier, key)),
            action=_action(columns, key) if update else sql.SQL("DO NOTHING")))
    conn.execute(sql.SQL("DELETE FROM {stage}").format(stage=stage))


def _action(columns: Sequence[str], key: Sequence[str]) -> sql.Composable:
    return sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
        for c in columns if c not in key)
