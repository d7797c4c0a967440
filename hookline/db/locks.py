"""PostgreSQL advisory locks: stable keys from names, and locks on rows that may not exist yet."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

Row = tuple[str, str]  # (kind, key): ("transaction", id) or ("booking", reference)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for the advisory lock functions, derived from a name."""
    digest = hashlib.sha256(f"hookline:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_rows(conn: psycopg.Connection[Any], rows: set[Row], locked: set[Row]) -> set[Row]:
    """Lock rows until commit, whether they exist or not, and return every row now locked.

    One call takes its locks in key order, so two transactions never wait for each other in a
    circle; a second call in the same transaction can still close one, and PostgreSQL then
    aborts one of the two (the caller retries it)."""
    keys = sorted({lock_key(f"{kind}:{name}") for kind, name in rows - locked})
    if keys:
        conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (keys,))
    return locked | rows
