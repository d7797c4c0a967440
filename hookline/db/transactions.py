"""The transactions table: one row per payment, by (transaction_id, source)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from typing import Any

import psycopg
from psycopg import sql

from hookline.db import bulk
from hookline.domain.transactions import TransactionState

TxKey = tuple[str, str]  # a transaction row's key: (transaction_id, source)
COLUMNS = [f.name for f in fields(TransactionState)]
_ROW = attrgetter(*COLUMNS)  # dataclasses.astuple deep-copies every value: far slower
_SELECT = sql.SQL("SELECT {} FROM transactions").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
_BY_ID = _SELECT + sql.SQL(" WHERE transaction_id = ANY(%s)")
_BY_BOOKING = _SELECT + sql.SQL(" WHERE booking_reference = ANY(%s)")


def with_ids(conn: psycopg.Connection[Any], ids: Iterable[str]) -> dict[TxKey, TransactionState]:
    """Every row with one of the ids, whatever its source: one key range each."""
    cursor = conn.execute(_BY_ID, (list(ids),))
    return {(row[0], row[1]): TransactionState(*row) for row in cursor}


def of_bookings(conn: psycopg.Connection[Any],
                references: Iterable[str]) -> list[TransactionState]:
    """Every row whose booking_reference is one of `references`."""
    return [TransactionState(*row) for row in conn.execute(_BY_BOOKING, (list(references),))]


def upsert(conn: psycopg.Connection[Any], states: Iterable[TransactionState]) -> None:
    """Write each state over the row with its key, or as a new row."""
    bulk.upsert(conn, "transactions", COLUMNS, ["transaction_id", "source"], map(_ROW, states))


def timed_out(conn: psycopg.Connection[Any], seconds: float,
              limit: int) -> list[tuple[str, str, str | None, datetime]]:
    """Trusted payments pending for `seconds` or longer, oldest first:
    (source, transaction_id, booking_reference, created_at)."""
    return conn.execute(
        "SELECT source, transaction_id, booking_reference, created_at FROM transactions "
        "WHERE status = 'pending' AND trusted "
        "AND created_at <= now() - make_interval(secs => %s) ORDER BY created_at LIMIT %s",
        (seconds, limit)).fetchall()


def changed_at(conn: psycopg.Connection[Any], moment: datetime) -> dict[TxKey, TransactionState]:
    """The rows a projection at `moment` changed (it sets updated_at to that moment)."""
    cursor = conn.execute(_SELECT + sql.SQL(" WHERE updated_at = %s"), (moment,))
    return {(row[0], row[1]): TransactionState(*row) for row in cursor}
