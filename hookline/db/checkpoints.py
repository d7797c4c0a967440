"""Consumer checkpoints (`consumer_offsets`): the last offset each consumer has projected.

A checkpoint moves in the transaction that writes what its records mean, and only from the
value the consumer read, so two consumers of one name never both advance it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

TABLE = "consumer_offsets"


def load(conn: psycopg.Connection[Any], consumer: str) -> int:
    """The checkpoint as the current transaction sees it (-1 before the first commit)."""
    row = conn.execute("SELECT last_offset FROM consumer_offsets WHERE consumer = %s",
                       (consumer,)).fetchone()
    return -1 if row is None else int(row[0])


def advance(conn: psycopg.Connection[Any], consumer: str, expected: int, last: int) -> bool:
    """Move the checkpoint from `expected` to `last`; False if it was no longer `expected`."""
    if expected < 0:
        cursor = conn.execute(
            "INSERT INTO consumer_offsets (consumer, last_offset) VALUES (%s, %s) "
            "ON CONFLICT (consumer) DO NOTHING", (consumer, last))
    else:
        cursor = conn.execute(
            "UPDATE consumer_offsets SET last_offset = %s "
            "WHERE consumer = %s AND last_offset = %s", (last, consumer, expected))
    return cursor.rowcount == 1


def every(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    """Every consumer's checkpoint, by consumer name."""
    return [(name, int(offset)) for name, offset in conn.execute(
        "SELECT consumer, last_offset FROM consumer_offsets ORDER BY consumer")]


def of(conn: psycopg.Connection[Any], consumers: Sequence[str],
       schema: str = "public") -> dict[str, int]:
    """The checkpoints of `consumers` that exist, in the table of `schema`."""
    return {name: int(offset) for name, offset in conn.execute(sql.SQL(
        "SELECT consumer, last_offset FROM {} WHERE consumer = ANY(%s)").format(
            sql.Identifier(schema, TABLE)), (list(consumers),))}


def first_named(conn: psycopg.Connection[Any], prefix: str) -> str | None:
    """The first consumer, by name, whose name starts with `prefix`."""
    row = conn.execute("SELECT consumer FROM consumer_offsets WHERE consumer LIKE %s "
                       "ORDER BY consumer LIMIT 1", (f"{prefix}%",)).fetchone()
    return None if row is None else str(row[0])


def remove(conn: psycopg.Connection[Any], consumer: str, last: int) -> int:
    """Delete the checkpoint of `consumer` if it is at `last`; how many rows went (0 or 1)."""
    return conn.execute("DELETE FROM consumer_offsets WHERE consumer = %s AND "
                        "last_offset = %s", (consumer, last)).rowcount


def add(conn: psycopg.Connection[Any], found: Sequence[tuple[str, int]]) -> None:
    """New checkpoints, as (consumer, last_offset); none of them may exist."""
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO consumer_offsets (consumer, last_offset) VALUES (%s, %s)", found)
