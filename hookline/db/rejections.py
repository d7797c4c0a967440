"""Operators' rejections: a record the projector must project `rejected` without reading it,
for one that would otherwise stop it (`hookline events reject`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from hookline.db import checkpoints, events
from hookline.db.locks import lock_key


class AlreadyProjected(Exception):
    """The offset is at or before the checkpoint: a rejection would change nothing."""


def rejections_lock(consumer: str) -> int:
    """Held by a batch while it reads the rejections and commits, and by `add` while it checks
    and writes: a rejection is either seen by the batch or refused as already projected."""
    return lock_key(f"operator-rejections:{consumer}")


def add(conn: psycopg.Connection[Any], consumer: str, partition: int, offset: int,
        reason: str) -> bool:
    """Record the rejection of a record not yet projected; whether one was already there."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (rejections_lock(consumer),))
        checkpoint = checkpoints.load(conn, consumer)
        if offset <= checkpoint:
            raise AlreadyProjected(_projected(conn, partition, offset, checkpoint))
        replaced = conn.execute(
            'INSERT INTO operator_rejections ("partition", "offset", reason, rejected_at) '
            "VALUES (%s, %s, %s, %s) ON CONFLICT (\"partition\", \"offset\") DO UPDATE "
            "SET reason = excluded.reason, rejected_at = excluded.rejected_at "
            "RETURNING xmax <> 0", (partition, offset, reason, datetime.now(UTC))).fetchone()
    return bool(replaced and replaced[0])


def _projected(conn: psycopg.Connection[Any], partition: int, offset: int,
               checkpoint: int) -> str:
    what = events.outcome(conn, partition, offset) or "it holds no record"
    return (f"offset {offset} of partition {partition} is already projected ({what}; the "
            f"checkpoint is at {checkpoint}): a rejection now would change nothing; to undo "
            "its effects, fix the cause and rebuild")


def hold(conn: psycopg.Connection[Any], consumers: Sequence[str]) -> None:
    """Wait for the batches of these consumers in flight, and keep their next ones waiting until
    the transaction ends (each batch holds its consumer's lock from start to commit)."""
    keys = sorted(rejections_lock(consumer) for consumer in consumers)
    conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (keys,))


def among(conn: psycopg.Connection[Any], partition: int, offsets: Sequence[int]) -> set[int]:
    """Which of the offsets of a partition an operator rejected."""
    return {int(row[0]) for row in conn.execute(
        'SELECT "offset" FROM operator_rejections WHERE "partition" = %s '
        'AND "offset" = ANY(%s)', (partition, list(offsets)))}


def remove(conn: psycopg.Connection[Any], partition: int, offsets: Sequence[int]) -> None:
    """Forget the operators' rejections of the offsets: a later decision replaced them."""
    conn.execute('DELETE FROM operator_rejections WHERE "partition" = %s AND "offset" = ANY(%s)',
                 (partition, list(offsets)))
