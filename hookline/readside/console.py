"""What the operator console reads besides the API's lists: deliveries of the last hour, the
alerts whose conditions the database and the log can answer, payloads and emails of a trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, Text, func, literal_column, select, tuple_

from hookline.db.models import EmailOutbox, Event
from hookline.db.outbox import SHOWN

_events = cast(Table, Event.__table__)
_outbox = cast(Table, EmailOutbox.__table__)
Row = dict[str, Any]

# the thresholds of deploy/alerts.yml (a unit test holds them equal)
LAG_LIMIT = 1000  # HooklineConsumerLagGrowing
REJECTS_WINDOW_MINUTES = 15  # HooklineProjectionRejects
OLDEST_EMAIL_SECONDS = 1800  # HooklineOldestPendingEmail


@dataclass(frozen=True)
class Alert:
    """One rule of deploy/alerts.yml as far as the database and the log can evaluate it now."""

    name: str
    severity: str
    firing: bool
    detail: str
    unevaluated: str  # what of the rule is not checked here (its `for:`, a rate)


def deliveries_last_hour(conn: Connection) -> list[Row]:
    """Records received in the last hour, counted per source and outcome."""
    since = func.now() - literal_column("interval '1 hour'")
    rows = conn.execute(
        select(_events.c.source, _events.c.outcome, func.count().label("count"))
        .where(_events.c.received_at >= since)
        .group_by(_events.c.source, _events.c.outcome)
        .order_by(_events.c.source, _events.c.outcome)).mappings()
    return [dict(row) for row in rows]


def recent_rejections(conn: Connection) -> int:
    """Records rejected among those received in the alert's window (its index is by time)."""
    since = func.now() - literal_column(f"interval '{REJECTS_WINDOW_MINUTES} minutes'")
    return int(conn.execute(select(func.count()).select_from(_events).where(
        _events.c.received_at >= since, _events.c.outcome == "rejected")).scalar_one())


def alerts(status: Row, rejections: int) -> list[Alert]:
    """The rules computable from `status` (queries.status) and the recent rejections."""
    lags = [c for c in status["consumers"] if c["lag"] is not None and c["lag"] > LAG_LIMIT]
    counts, oldest = status["outbox"]["counts"], status["outbox"]["oldest_pending_age_seconds"]
    return [
        Alert("HooklineConsumerLagGrowing", "page", bool(lags),
              ", ".join(f"{c['consumer']} is {c['lag']} records behind" for c in lags)
              or f"every consumer is within {LAG_LIMIT} records of its partition's end",
              "whether the lag grows, and for 10 minutes"),
        Alert("HooklineProjectionRejects", "warning", rejections > 0,
              f"rejected among the records received in the last {REJECTS_WINDOW_MINUTES} "
              f"minutes: {rejections}", "counted by time received rather than projected"),
        Alert("HooklineOutboxDeadRows", "warning", counts["dead"] > 0,
              f"{counts['dead']} customer emails are dead", "for 5 minutes"),
        Alert("HooklineOldestPendingEmail", "warning",
              oldest is not None and oldest > OLDEST_EMAIL_SECONDS,
              "no email is owed" if oldest is None
              else f"the oldest owed email has waited {int(oldest)} s "
                   f"(the limit is {OLDEST_EMAIL_SECONDS} s)", "for 5 minutes"),
    ]


def payloads(conn: Connection, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The stored payload text (numbers exact) of each (partition, offset) given."""
    if not keys:
        return {}
    rows = conn.execute(select(_events.c.partition, _events.c.offset,
                               _events.c.payload.cast(Text).label("payload"))
                        .where(tuple_(_events.c.partition, _events.c.offset).in_(list(keys))))
    return {(row.partition, row.offset): row.payload for row in rows if row.payload is not None}


def emails_of(conn: Connection, event_ids: Sequence[str]) -> list[Row]:
    """The emails these records caused, oldest first, without their context and bodies."""
    if not event_ids:
        return []
    shown = [_outbox.c[name] for name in SHOWN]
    rows = conn.execute(select(*shown).where(_outbox.c.event_id.in_(list(event_ids)))
                        .order_by(_outbox.c.id)).mappings()
    return [dict(row) for row in rows]


def email(conn: Connection, email_id: int) -> Row | None:
    """One outbox row whole: its context and, once sent, the bodies it was sent with."""
    row = conn.execute(select(_outbox).where(_outbox.c.id == email_id)).mappings().first()
    return None if row is None else dict(row)

