"""Each list of the operator API, with each of its filters, is read through an index.

The tables hold tens of thousands of rows with realistic spreads (and are analyzed), so the
planner chooses as it would in production; docs/operations-api.md shows the plans.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Select, create_engine

from hookline.readside import queries
from tests.operator_seed import seed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = datetime(2026, 1, 2, tzinfo=UTC)
PAGE_BLOCKS = 120
PARTITIONS = 4  # the events' offsets run to 15000 in each
CASES: list[tuple[queries.Listing, dict[str, Any], tuple[Any, ...] | None]] = [
    (queries.TRANSACTIONS, {}, None),
    (queries.TRANSACTIONS, {}, (DAY, "tx-0001000", "stripe")),
    (queries.TRANSACTIONS, {"status": "failed"}, None),
    (queries.TRANSACTIONS, {"status": "failed"}, (DAY, "tx-0001000", "stripe")),
    (queries.TRANSACTIONS, {"source": "chapa"}, None),
    (queries.TRANSACTIONS, {"booking_reference": "BK-7"}, None),
    (queries.TRANSACTIONS, {"created_after": T0, "created_before": DAY}, None),
    (queries.TRANSACTIONS, {"flag": "disputed"}, None),
    (queries.TRANSACTIONS, {"flag": "refunded"}, (DAY, "tx-0001000", "stripe")),
    (queries.BOOKINGS, {}, None),
    (queries.BOOKINGS, {}, (DAY, "BK-100")),
    (queries.BOOKINGS, {}, (None, "BK-100")),
    (queries.BOOKINGS, {"status": "expired"}, None),
    (queries.BOOKINGS, {"customer_email": "guest7@example.com"}, None),
    (queries.BOOKINGS, {"flag": "late_payment"}, None),
    (queries.BOOKINGS, {"flag": "amount_mismatch"}, (DAY, "BK-100")),
    (queries.BOOKINGS, {"created_after": T0, "created_before": DAY}, None),
    (queries.EVENTS, {}, None),
    (queries.EVENTS, {}, (7500, 2)),
    (queries.EVENTS, {"source": "scheduler"}, None),
    (queries.EVENTS, {"type": "booking.expired"}, (7500, 2)),
    (queries.EVENTS, {"subject": "BK-7"}, None),
    (queries.EVENTS, {"subject": "BK-7"}, (7500, 2)),
    (queries.EVENTS, {"outcome": "rejected"}, None),
    (queries.EVENTS, {"received_after": T0, "received_before": DAY}, None),
    (queries.EVENTS, {"partition": 3}, None),
    (queries.EVENTS, {"partition": 1}, (7500, 2)),
    (queries.EVENTS, {"partition": 1, "source": "chapa"}, (7500, 2)),
    (queries.OUTBOX, {}, None),
    (queries.OUTBOX, {"status": "dead"}, None),
    (queries.OUTBOX, {"template": "payment_failure"}, (10000,)),
]


@pytest.fixture(scope="module")
def analyzed(template_database: str) -> Iterator[Connection]:
    """One database for the module, filled and analyzed once."""
    from tests.conftest import _db_url, copied_database

    with copied_database(template_database) as name:
        url = _db_url(name)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as db:
            seed(db, transactions=30000, bookings=20000, events=60000, emails=20000,
                 moments=5000, references=5000, partitions=PARTITIONS)
            db.execute("ANALYZE")
        engine = create_engine(url)
        with engine.connect() as conn:
            yield conn
        engine.dispose()


def explain(conn: Connection, statement: Select[Any]) -> dict[str, Any]:
    compiled = statement.compile(dialect=conn.dialect)
    result = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled}",
                                  compiled.params)
    plan: dict[str, Any] = result.scalar_one()[0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def describe(plan: dict[str, Any], depth: int = 0) -> str:
    index = f" using {plan['Index Name']}" if "Index Name" in plan else ""
    line = f"{'  ' * depth}{plan['Node Type']}{index}"
    return "\n".join([line, *(describe(p, depth + 1) for p in plan.get("Plans", []))])


@pytest.mark.parametrize(("listing", "filters", "after"), CASES,
                         ids=[f"{c[0].name}-{'+'.join(c[1]) or 'all'}{'-after' if c[2] else ''}"
                              for c in CASES])
def test_each_list_and_filter_is_read_through_an_index_not_a_scan(
        analyzed: Connection, listing: queries.Listing, filters: dict[str, Any],
        after: tuple[Any, ...] | None) -> None:
    for plan in [explain(analyzed, s) for s in listing.statements(filters, 50, after)]:
        kinds = [node["Node Type"] for node in nodes(plan)]
        assert "Seq Scan" not in kinds, describe(plan)
        used = {node["Index Name"] for node in nodes(plan) if "Index Name" in node}
        assert used, describe(plan)
        assert all(name.startswith(listing.table.name) for name in used), describe(plan)
        pages = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
        # a page of 50 costs about a block per row, whatever the table's size
        assert pages <= PAGE_BLOCKS, f"{pages} blocks read:\n{describe(plan)}"
        print(f"\n{listing.name} {filters} after={after}: {pages} blocks\n{describe(plan)}")


def test_a_page_from_the_query_is_what_its_sql_says(analyzed: Connection) -> None:
    """The compiled statement the plans come from returns the rows the API pages through."""
    found = queries.page(analyzed, queries.TRANSACTIONS, {"status": "failed"}, 5)
    rows = analyzed.exec_driver_sql(
        "SELECT transaction_id, source FROM transactions WHERE status = 'failed' "
        "ORDER BY created_at DESC, transaction_id DESC, source DESC LIMIT 5").all()
    assert [(r["transaction_id"], r["source"]) for r in found.items] == [tuple(r) for r in rows]
    assert found.next_key == (found.items[-1]["created_at"], *rows[-1])
