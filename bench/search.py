"""Payload search: `GET /v1/events?q=` over a million records by its full-text index, against
the same query with no index and against a trigram index of the payload's text.

    python -m bench.search [--events 1000000] [--runs 20] [--baseline-runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import ColumnElement, Connection, Engine, Table, Text, create_engine

from bench.common import (
    BENCH_TOKEN,
    env_for,
    exit_on_sigterm,
    free_port,
    hookline,
    record,
    scratch,
    stop,
    wait_http,
)
from hookline.config import Settings
from hookline.db.events import COLUMNS
from hookline.db.models import Event
from hookline.readside import queries

FIXTURES = Path("/work/shared/fixtures/providers")
FULL_TEXT = "CREATE INDEX CONCURRENTLY events_payload_search ON events USING gin " \
    "(jsonb_to_tsvector('simple'::regconfig, payload, '[\"string\", \"numeric\"]'::jsonb))"
TRIGRAM = "CREATE INDEX CONCURRENTLY events_payload_trigram ON events USING gin " \
          "((payload::text) gin_trgm_ops)"
_events = cast(Table, Event.__table__)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
INSERTED = 20_000  # rows COPYed (and rolled back) to price the index on the projector's writes
COPY = f"COPY events ({', '.join(map(json.dumps, COLUMNS))}) FROM STDIN"


# --- the records: the providers' own payloads, a few fields varied per record ----------------

def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _templates() -> list[tuple[str, str, str]]:
    """(source, type, payload JSON with @N@ @REF@ @EMAIL@ @AMOUNT@ @CENTS@ placeholders)."""
    intent = _fixture("stripe_payment_intent.created.json")
    intent["id"], intent["type"] = "evt_@N@", "payment_intent.succeeded"
    intent["data"]["object"].update(id="pi_@N@", amount="@CENTS@", amount_received="@CENTS@",
                                    receipt_email="@EMAIL@", status="succeeded",
                                    metadata={"booking_reference": "@REF@"})
    charge = _fixture("stripe_openapi_fixtures3_subset.json")["resources"]["charge"]
    charge.update(id="ch_@N@", amount="@CENTS@", receipt_email="@EMAIL@",
                  metadata={"booking_reference": "@REF@"})
    charge["billing_details"]["email"] = "@EMAIL@"  # about 4 kB: TOASTed, compressed
    charge_event = {"id": "evt_@N@", "object": "event", "type": "charge.succeeded",
                    "created": 1_700_000_000, "data": {"object": charge}}
    session = _fixture("stripe_checkout.session.completed.json")
    session["id"] = "evt_@N@"
    session["data"]["object"].update(id="cs_@N@", amount_total="@CENTS@",
                                     customer_email="@EMAIL@", client_reference_id="@REF@")
    chapa = _fixture("chapa_charge.success.json")
    chapa.update(email="@EMAIL@", amount="@AMOUNT@", reference="AP@N@", tx_ref="@REF@",
                 payment_method="@METHOD@")
    transaction = {"transaction_id": "tx-@N@", "source_account": "acct-@N@",
                   "destination_account": "acct-hotel", "amount": "@AMOUNT@",
                   "currency": "EUR", "booking_reference": "@REF@"}
    booking = {"type": "booking.created", "booking": {
        "reference": "@REF@", "customer": {"email": "@EMAIL@", "name": "Guest @N@"},
        "destination": "Lisbon", "travel_date": "2027-05-01", "return_date": "2027-05-08",
        "travelers": 2, "total_amount": "@AMOUNT@", "currency": "USD",
        "created_at": "2026-11-22T10:00:00Z"}}
    kinds = [("stripe", "payment_intent.succeeded", intent), ("stripe", "charge.succeeded",
             charge_event), ("stripe", "checkout.session.completed", session),
             ("chapa", "charge.success", chapa), ("transactions", "transaction.succeeded",
             transaction), ("bookings", "booking.created", booking)]
    return [(source, kind, json.dumps(body).replace('"@CENTS@"', "@CENTS@"))
            for source, kind, body in kinds]


# of every 20 records: 6 payment intents, 2 charges, 2 sessions, 4 chapa, 3 transactions, 3
# bookings
CYCLE = [0, 3, 4, 5, 0, 1, 0, 3, 4, 5, 0, 2, 0, 3, 4, 5, 0, 1, 3, 2]


def reference(n: int) -> str:
    return f"BK-{n // 4:07d}"  # a booking's few records share its reference


def email(n: int) -> str:
    return f"guest{n:07d}@example.com"  # each record its own customer: present once


def amount(n: int) -> int:
    return (n * 7919) % 250_000 + 500  # in cents


METHODS = ("telebirr", "cbebirr", "mpesa", "awashbirr", "amole", "ebirr", "coopay", "kacha",
           "enat", "card")  # each on a tenth of Chapa's records: 2% of all


def rows(first: int, count: int) -> Iterator[tuple[Any, ...]]:
    templates = _templates()
    for n in range(first, first + count):
        source, kind, template = templates[CYCLE[n % len(CYCLE)]]
        cents = amount(n)
        payload = (template.replace("@N@", str(n)).replace("@REF@", reference(n))
                   .replace("@EMAIL@", email(n)).replace("@CENTS@", str(cents))
                   .replace("@AMOUNT@", f"{cents / 100:.2f}")
                   .replace("@METHOD@", METHODS[n // len(CYCLE) % len(METHODS)]))
        outcome = "duplicate" if n % 20 == 7 else "rejected" if n % 97 == 0 else "applied"
        moment = T0 + timedelta(seconds=n)
        yield (n, 0, f"{source}:{n}", source, kind, reference(n), moment, moment, outcome,
               "amount: missing" if outcome == "rejected" else None, payload)


def load(url: str, first: int, count: int) -> float:
    """COPY `count` records; the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cursor, cursor.copy(COPY) as copy:
        for row in rows(first, count):
            copy.write_row(row)
    return time.perf_counter() - started


def insert_rate(url: str, first: int) -> float:
    """Records/s of a COPY of INSERTED records in one transaction, rolled back."""
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        with cursor.copy(COPY) as copy:
            for row in rows(first, INSERTED):
                copy.write_row(row)
        seconds = time.perf_counter() - started
        conn.rollback()
    return INSERTED / seconds


# --- the searches -------------------------------------------------------------------------------

def searches(events: int) -> list[tuple[str, dict[str, Any]]]:
    """(label, filters) of the searches timed; the record numbers are inside the loaded range."""
    def kind_from(n: int, kinds: tuple[int, ...]) -> int:
        return next(m for m in range(n, events) if CYCLE[m % len(CYCLE)] in kinds)
    once = kind_from(events * 3 // 4, (0,))
    priced = kind_from(events // 5, (3, 4, 5))  # an amount written as a decimal string
    return [
        ("an email present once", {"q": email(once)}),
        ("part of that email", {"q": email(once)[2:12]}),
        ("a booking reference (4 records)", {"q": reference(events // 3)}),
        ("an amount", {"q": f"{amount(priced) / 100:.2f}"}),
        ("a term absent", {"q": "no-such-text-anywhere"}),
        ("a term of 2% of records", {"q": "awashbirr"}),
        ("a common term (most records)", {"q": "succeeded"}),
        ("a reference, source=stripe", {"q": reference(events // 3), "source": "stripe"}),
    ]


BASELINE = (0, 2, 4)  # the searches also timed with no index: each reads the whole table


Search = Callable[[Connection, dict[str, Any]], int]


def through(listing: queries.Listing) -> Search:
    def search(conn: Connection, filters: dict[str, Any]) -> int:
        return len(queries.page(conn, listing, filters, 50).items)
    return search


def _trigram(q: str) -> ColumnElement[bool]:
    """A substring of the payload's JSON text, any case: q as JSON writes it in a string, LIKE's
    wildcards and escape in it made literal."""
    written = json.dumps(q, ensure_ascii=False)[1:-1]
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", written) + "%"
    return cast(ColumnElement[bool], _events.c.payload.cast(Text).ilike(pattern))


TRIGRAM_EVENTS = dataclasses.replace(queries.EVENTS,
                                     filters={**queries.EVENTS.filters, "q": _trigram})


def timed(conn: Connection, search: Search, filters: dict[str, Any], runs: int
          ) -> tuple[list[float], int]:
    """Milliseconds of each run, and the rows the first page held."""
    times, found = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        found = search(conn, filters)
        times.append((time.perf_counter() - started) * 1000)
    return times, found


def plan(conn: Connection, listing: queries.Listing, filters: dict[str, Any]) -> str:
    statement = queries.page_statements(conn, listing, filters, 50)[0]
    compiled = statement.compile(dialect=conn.dialect)
    found = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params
                                 ).scalar_one()[0]["Plan"]
    return " > ".join(_nodes(found))


def _nodes(node: dict[str, Any]) -> Iterator[str]:
    index = f" {node['Index Name']}" if "Index Name" in node else ""
    yield f"{node['Node Type']}{index}"
    for child in node.get("Plans", []):
        yield from _nodes(child)


def row(label: str, approach: str, times: list[float], found: int, how: str) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"| {label} | {approach} | {len(times)} | {statistics.median(times):,.1f} | "
            f"{p95:,.1f} | {max(times):,.1f} | {found} | {how} |")


def over_http(settings: Settings, filters: dict[str, Any], runs: int) -> tuple[list[float], int]:
    """`hookline api` answering GET /v1/events?q=…, timed from this process."""
    port = free_port()
    api = hookline("api", "--bind", f"127.0.0.1:{port}", env=env_for(settings))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/v1/events?{urllib.parse.urlencode(filters)}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {BENCH_TOKEN}"})
        times, found = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 (loopback)
                found = len(json.loads(answer.read())["items"])
            times.append((time.perf_counter() - started) * 1000)
        return times, found
    finally:
        stop(api)


# --- the run ------------------------------------------------------------------------------------

def build(url: str, statement: str, name: str) -> tuple[float, int]:
    """Seconds to build an index, and its size in bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(statement)
        seconds = time.perf_counter() - started
        conn.execute("ANALYZE events")  # statistics of the indexed expression
        size = conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()
    return seconds, int(size[0]) if size else 0


def drop(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {name}")


def approach(engine: Engine, listing: queries.Listing, label: str, runs: int,
             cases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """A table row per search, each timed `runs` times through the listing's query."""
    found: list[str] = []
    with engine.connect() as conn:
        for name, filters in cases:
            times, count = timed(conn, through(listing), filters, runs)
            found.append(row(name, label, times, count, plan(conn, listing, filters)))
    return found


class Run:
    """One benchmark run: its scratch database loaded, then each index in turn."""

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.settings, self.args = settings, args
        self.url = settings.database_url.replace("+psycopg", "")
        self.engine = create_engine(settings.database_url)
        self.cases = searches(args.events)
        self.rows: list[str] = []
        self.facts: list[str] = []

    def load(self) -> None:
        drop(self.url, "events_payload_search")  # loaded first, indexed after
        seconds = load(self.url, 0, self.args.events)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE events")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # for the comparison
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('events')), "
                                "avg(octet_length(payload::text))::int FROM events").fetchone()
        self.facts.append(f"load: {self.args.events:,} records COPYed in {seconds:.0f} s; the "
                          f"events table {size[0] if size else '?'} with its TOAST and indexes, "
                          f"payload JSON text {size[1] if size else '?'} bytes on average")
        self.facts.append(f"COPY of {INSERTED:,} more records in one transaction (the "
                          f"projector's write), no search index: "
                          f"{insert_rate(self.url, self.args.events):,.0f} records/s")

    def baseline(self) -> None:
        cases = [self.cases[k] for k in BASELINE]
        self.rows += approach(self.engine, queries.EVENTS, "**baseline: no index**",
                              self.args.baseline_runs, cases)

    def index(self, label: str, statement: str, name: str, listing: queries.Listing) -> None:
        seconds, size = build(self.url, statement, name)
        rate = insert_rate(self.url, self.args.events)
        self.facts.append(f"{label}: built CONCURRENTLY in {seconds:.0f} s, "
                          f"{size / 2**20:,.0f} MiB; COPY of {INSERTED:,} more records with it: "
                          f"{rate:,.0f} records/s")
        self.rows += approach(self.engine, listing, label, self.args.runs, self.cases)

    def http(self) -> None:
        name, filters = self.cases[0]
        times, count = over_http(self.settings, filters, self.args.runs)
        self.rows.append(row(name, "full text, HTTP `GET /v1/events?q=`", times, count,
                             "hookline api, from a client in this process"))


def run(args: argparse.Namespace) -> None:
    with scratch("search") as settings:
        bench = Run(settings, args)
        try:
            bench.load()
            bench.baseline()
            if not args.skip_trigram:
                bench.index("trigram GIN of the JSON text", TRIGRAM, "events_payload_trigram",
                            TRIGRAM_EVENTS)
                drop(bench.url, "events_payload_trigram")
            bench.index("**full text (migration 0009)**", FULL_TEXT, "events_payload_search",
                        queries.EVENTS)
            bench.http()
        finally:
            bench.engine.dispose()
    report(args, bench.rows, bench.facts)


def report(args: argparse.Namespace, rows: list[str], facts: list[str]) -> None:
    table = "\n".join([
        "| search | index | runs | p50 ms | p95 ms | max ms | rows (page of 50) | plan |",
        "|---|---|---|---|---|---|---|---|", *rows])
    load_average = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    notes = "\n".join(f"- {fact}" for fact in facts) + (
        f"\n- load average at the end: {load_average} (other work shared the machine)\n"
        "- each search is the first page (50 rows, newest first) through "
        "`hookline.readside.queries.page`; full text matches whole words as a phrase "
        "(`phraseto_tsquery('simple', q)` over string and number values), so it misses a part "
        "of an email or a reference that the trigram index (`payload::text ILIKE '%q%'`) finds")
    command = (f"python -m bench.search --events {args.events} --runs {args.runs} "
               f"--baseline-runs {args.baseline_runs}"
               + (" --skip-trigram" if args.skip_trigram else ""))
    record("Payload search", command, table, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each search")
    parser.add_argument("--baseline-runs", type=int, default=1,
                        help="runs of each search with no index (seconds each)")
    parser.add_argument("--skip-trigram", action="store_true", help="only the chosen index")
    exit_on_sigterm()
    run(parser.parse_args())


if __name__ == "__main__":
    main()
