"""Operators' rejections: a record the projector must project `rejected` without reading it,
for one that would otherwise stop it (`hookline events reject`)."""

from __future__ import annotations

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
