"""`hookline rebuild` and the operators' view after mixed traffic through the real processes:
ingest, projector, mailer, scheduler and API, with real signatures, SMTP and the real log."""

from __future__ import annotations

import copy
import json
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from hookline.projection.rebuild import PROJECTION_TIMES
from hookline.senders.signatures import sign_chapa, sign_stripe
from tests.conftest import (
    AMQP_URL,
    _db_url,
    copy_database,
    delete_streams,
    drop_database,
    new_stream,
)
from tests.e2e.test_bookings import SECRET, booking, post_booking, post_payment
from tests.e2e.test_payment_providers import OPENAPI, fixture, stripe_event
from tests.mailbox import Mailbox
from tests.processes import Pipeline, eventually, free_port, running_pipeline, scalar

STRIPE, CHAPA = "whsec_rebuild_secret_0001", "chapa-rebuild-secret-0001"
TABLES = {"events": ("offset", "partition"), "transactions": ("transaction_id",),
          "bookings": ("reference",), "email_outbox": ("id",), "consumer_offsets": ("consumer",)}


class Shop:
    """The running pipeline, its database and its mailbox, after the mixed traffic."""

    def __init__(self, pipeline: Pipeline, db: psycopg.Connection, mailbox: Mailbox) -> None:
        self.pipeline, self.db, self.mailbox = pipeline, db, mailbox

    def hookline(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hookline", *args],
                              env=self.pipeline.env, capture_output=True, text=True,
                              timeout=timeout)

    def rebuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.hookline("rebuild", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> str:
        answer = self.pipeline.http.post(
            f"{self.pipeline.ingest_url}/v1/webhooks/{source}", data=body, timeout=30,
            headers={"Content-Type": "application/json", **headers})
        assert answer.status_code == 202, answer.text
        envelope_id: str = answer.json()["id"]
        return envelope_id

    def stripe(self, event: dict[str, Any]) -> str:
        body = orjson.dumps(event)
        return self.post("stripe", body,
                         {"Stripe-Signature": sign_stripe(STRIPE, int(time.time()), body)})

    def chapa(self, payload: dict[str, Any]) -> str:
        body = orjson.dumps(payload)
        return self.post("chapa", body, sign_chapa(CHAPA, body))


@pytest.fixture(scope="module")
def shop(template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    name, stream = copy_database(template_database), new_stream()
    url = _db_url(name)
    mailbox = Mailbox(free_port()).start()
    env = {"HOOKLINE_DATABASE_URL": url, "HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream,
           "HOOKLINE_STRIPE_SECRETS": STRIPE, "HOOKLINE_CHAPA_SECRETS": CHAPA,
           "HOOKLINE_BOOKINGS_SECRETS": SECRET, "HOOKLINE_SMTP_URL": mailbox.url,
           "HOOKLINE_MAIL_BACKOFF_BASE": "0.2", "HOOKLINE_SCHEDULE_INTERVAL": "1",
           "HOOKLINE_PAYMENT_TIMEOUT": "3"}
    try:
        with running_pipeline(env, tmp_path_factory.mktemp("rebuild"),
                              parts=("ingest", "projector", "api")) as pipeline, \
                psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as db:
            pipeline.start_mailer()
            pipeline.start_scheduler()
            shop = Shop(pipeline, db, mailbox)
            mixed_traffic(shop)
            settled(shop)
            yield shop
    finally:
        mailbox.stop()
        drop_database(name)
        delete_streams(stream)


def mixed_traffic(shop: Shop) -> None:
    """Every kind of record: payments from three sources, bookings, duplicates, rejects,
    ignored types, a cancellation, an expiry with a late payment, a payment timeout."""
    p = shop.pipeline
    for ref, who in (("BK-PAID", "paid"), ("BK-STRIPE", "stripe"), ("BK-CHAPA", "chapa"),
                     ("BK-CANCEL", "cancel"), ("BK-FAILED", "failed")):
        post_booking(p, booking(ref, f"{who}@example.com", f"Guest {who}"), times=2)
    late = {**booking("BK-LATE", "late@example.com", "Guest late"),
            "created_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
    post_booking(p, late)  # past its deadline already: the scheduler expires it
    post_payment(p, "tx-paid", "BK-PAID", "succeeded", times=2)
    post_payment(p, "tx-failed", "BK-FAILED", "failed", reason="card declined")
    post_payment(p, "tx-stuck", None, "pending")  # times out after HOOKLINE_PAYMENT_TIMEOUT
    post_booking(p, {"reference": "BK-CANCEL", "reason": "changed plans"}, "booking.cancelled")
    intent = stripe_event("payment_intent.succeeded", "payment_intent", "evt_rb_pi",
                          id="pi_rb", amount=25000, currency="eur", status="succeeded",
                          latest_charge="ch_rb", metadata={"booking_reference": "BK-STRIPE"})
    for _ in range(2):
        shop.stripe(intent)
    shop.stripe(stripe_event("charge.refunded", "charge", "evt_rb_refund", id="ch_rb",
                             payment_intent="pi_rb", amount=25000, amount_captured=25000,
                             amount_refunded=5000, currency="eur", captured=True))
    shop.stripe({**copy.deepcopy(OPENAPI["event"]), "id": "evt_rb_dispute",
                 "type": "charge.dispute.created",
                 "data": {"object": {"id": "dp_rb", "object": "dispute", "amount": 25000,
                                     "currency": "eur", "charge": "ch_rb",
                                     "payment_intent": "pi_rb"}}})
    shop.stripe(stripe_event("payment_intent.succeeded", "payment_intent", "evt_rb_partial",
                             id="pi_rb_partial", amount=None))  # rejected: no amount
    shop.stripe(OPENAPI["event"])  # plan.created: ignored
    shop.chapa({**fixture("chapa_charge.success.json"), "tx_ref": "BK-CHAPA",  # ETB: mismatch
                "meta": '{"booking_reference": "BK-CHAPA"}'})  # as Chapa's checkout sends it
    shop.chapa({**fixture("chapa_charge.failed_cancelled.json"), "tx_ref": "chapa-declined"})
    shop.chapa({**fixture("chapa_charge.success.json"), "tx_ref": "chapa-nocur",
                "currency": None})  # rejected: no currency
    eventually(lambda: _status(shop.db, "BK-LATE") == "expired" or _no(), timeout=40)
    post_payment(p, "tx-late", "BK-LATE", "succeeded")  # after the deadline: late payment


def settled(shop: Shop) -> None:
    """Everything projected, every deadline fired, every email sent."""
    def check() -> None:
        assert scalar(shop.db, "SELECT status FROM transactions WHERE transaction_id = "
                               "'tx-stuck'") == "timed_out"
        assert scalar(shop.db, "SELECT late_payment FROM bookings WHERE reference = "
                               "'BK-LATE'") is True
        end = scalar(shop.db, "SELECT max(\"offset\") FROM events")
        assert scalar(shop.db, "SELECT last_offset FROM consumer_offsets") == end
        statuses: dict[str, int] = dict(shop.db.execute(
            "SELECT status, count(*) FROM email_outbox GROUP BY status").fetchall())
        assert set(statuses) == {"sent"}, statuses
        assert len(shop.mailbox.received()) == statuses["sent"]
    eventually(check, timeout=60)


def _status(db: psycopg.Connection, reference: str) -> Any:
    return scalar(db, "SELECT status FROM bookings WHERE reference = %s", reference)


def _no() -> bool:
    raise AssertionError("not yet")


def checksums(db: psycopg.Connection, skip_times: bool = False) -> dict[str, str]:
    """One md5 per projection table over every row in key order, all columns (or all but the
    times of projection)."""
    found = {}
    for table, key in TABLES.items():
        dropped = PROJECTION_TIMES.get(table, ()) if skip_times else ()
        row = sql.SQL("to_jsonb(t){}").format(sql.SQL("").join(
            sql.SQL(" - {}").format(sql.Literal(c)) for c in dropped))
        found[table] = scalar(db, sql.SQL(
            "SELECT md5(coalesce(string_agg(({row})::text, '|' ORDER BY {key}), '')) "
            "FROM {table} AS t").format(
                row=row, key=sql.SQL(", ").join(sql.Identifier("t", c) for c in key),
                table=sql.Identifier(table)).as_string(db))
    return found


def api_snapshot(shop: Shop) -> dict[str, Any]:
    paths = ["/v1/transactions?limit=500", "/v1/bookings?limit=500", "/v1/events?limit=500",
             "/v1/outbox?limit=500", "/v1/transactions/pi_rb", "/v1/bookings/BK-STRIPE"]
    return {path: shop.pipeline.get(path).json() for path in paths}


class Poller(threading.Thread):
    """Asks the API over and over; keeps every answer that was not a 200."""

    def __init__(self, shop: Shop) -> None:
        super().__init__(daemon=True)
        self.shop, self.stop, self.answers = shop, threading.Event(), 0
        self.errors: list[str] = []

    def run(self) -> None:
        paths = ["/v1/transactions?limit=5", "/v1/bookings/BK-STRIPE", "/v1/events?limit=5",
                 "/v1/transactions/pi_rb", "/v1/bookings?status=confirmed"]
        while not self.stop.is_set():
            for path in paths:
                try:
                    answer = self.shop.pipeline.get(path)
                    if answer.status_code != 200:
                        self.errors.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                except OSError as exc:
                    self.errors.append(f"{path}: {exc}")
                self.answers += 1


# --- the tests, in the order an operator would meet them --------------------------------------


def test_the_operators_see_each_payment_and_booking_with_its_event_trail(shop: Shop) -> None:
    payment = shop.pipeline.get("/v1/transactions/pi_rb").json()
    assert (payment["status"], payment["amount"], payment["refunded_amount"],
            payment["disputed"]) == ("partially_refunded", "250.00", "50.00", True)
    ids = [e["id"] for e in payment["events"]]
    assert ids == ["stripe:evt_rb_pi", "stripe:evt_rb_pi", "stripe:evt_rb_refund",
                   "stripe:evt_rb_dispute"]
    assert [e["outcome"] for e in payment["events"]][:2] == ["applied", "duplicate"]

    found = shop.pipeline.get("/v1/bookings/BK-STRIPE").json()
    assert (found["status"], found["customer_email"]) == ("confirmed", "stripe@example.com")
    assert [t["transaction_id"] for t in found["transactions"]] == ["pi_rb"]
    assert [e["template"] for e in found["emails"]] == ["booking_confirmation",
                                                        "payment_confirmation"]
    assert all(e["status"] == "sent" for e in found["emails"])
    trail = [(e["source"], e["type"]) for e in found["events"]]
    assert trail[:2] == [("bookings", "booking.created")] * 2
    assert ("stripe", "charge.dispute.created") in trail

    late = shop.pipeline.get("/v1/bookings/BK-LATE").json()
    assert (late["status"], late["late_payment"]) == ("expired", True)
    assert [e["type"] for e in late["events"]] == ["booking.created", "booking.expired",
                                                   "transaction.succeeded"]
    mismatch = shop.pipeline.get("/v1/bookings?flag=amount_mismatch").json()["items"]
    assert [b["reference"] for b in mismatch] == ["BK-CHAPA"]
    rejected = shop.pipeline.get("/v1/events?outcome=rejected").json()["items"]
    assert sorted(e["subject"] for e in rejected) == ["chapa-nocur", "pi_rb_partial"]
    assert all(e["error"] for e in rejected)


def test_status_in_the_terminal_and_over_http_agree_on_the_log_lag_and_outbox(
        shop: Shop) -> None:
    done = shop.hookline("status", "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    served = shop.pipeline.get("/v1/status").json()
    end = scalar(shop.db, "SELECT last_offset FROM consumer_offsets")
    sent = scalar(shop.db, "SELECT count(*) FROM email_outbox")
    for found in (printed, served):
        assert found["log"]["end_offset"] == end
        assert found["consumers"] == [{"consumer": "projector", "checkpoint": end, "lag": 0}]
        assert found["outbox"]["counts"] == {"pending": 0, "sent": sent, "failed": 0, "dead": 0}
        assert found["outbox"]["oldest_pending_age_seconds"] is None
    text = shop.hookline("status").stdout
    assert f"end offset {end:,}" in text
    assert "projector" in text
    assert f"sent {sent:,}" in text


def test_events_tail_prints_the_last_records_and_follows_new_ones_until_ctrl_c(
        shop: Shop) -> None:
    last = shop.hookline("events", "tail", "-n", "40", "--source", "stripe")
    assert last.returncode == 0, last.stderr
    lines = last.stdout.splitlines()
    assert lines
    assert all(" stripe " in line for line in lines)
    assert any("stripe:evt_rb_refund" in line for line in lines)
    exact = shop.hookline("events", "tail", "--from", "0", "-n", "1", "--json")
    records = [json.loads(line) for line in exact.stdout.splitlines()]
    assert records[0]["id"].startswith("bookings:")
    assert len(records) == 1 + scalar(shop.db, "SELECT max(\"offset\") FROM events")

    after = scalar(shop.db, "SELECT max(\"offset\") FROM events") + 1
    follower = subprocess.Popen([sys.executable, "-m", "hookline", "events", "tail",
                                 "--follow", "--from", str(after), "--source", "transactions"],
                                env=shop.pipeline.env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        post_payment(shop.pipeline, "tx-tail", None, "succeeded")
        assert follower.stdout is not None
        readable, _, _ = select.select([follower.stdout], [], [], 30)
        assert readable, "the follower printed nothing"
        assert "transactions:tx-tail" in follower.stdout.readline()
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(20) == 0
    settled(shop)


def test_a_rebuild_reproduces_every_projection_row_for_row_and_sends_no_email(
        shop: Shop) -> None:
    before, answers = checksums(shop.db), api_snapshot(shop)
    emails = len(shop.mailbox.received())
    dry = shop.rebuild("--dry-run", "--json")
    report = json.loads(dry.stdout)
    assert not report["swapped"]
    assert [(d["table"], d["added"], d["removed"], d["changed"]) for d in report["diffs"]] == [
        ("events", 0, 0, 0), ("transactions", 0, 0, 0), ("bookings", 0, 0, 0),
        ("email_outbox", 0, 0, 0)]
    assert checksums(shop.db) == before

    poller = Poller(shop)
    poller.start()
    try:
        done = shop.rebuild()
    finally:
        poller.stop.set()
        poller.join(20)
    assert "swapped in" in done.stdout
    end = scalar(shop.db, "SELECT last_offset FROM consumer_offsets")
    assert f"{end + 1:,}/{end + 1:,} records" in done.stderr  # the progress line, at the end
    assert "ETA" in done.stderr
    assert poller.errors == []
    assert poller.answers > 20
    assert checksums(shop.db) == before  # identical, every column of every row
    assert api_snapshot(shop) == answers
    assert scalar(shop.db, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s",
                  "hookline%") == 0

    post_booking(shop.pipeline, booking("BK-AFTER", "after@example.com", "Guest after"))
    eventually(lambda: len(shop.mailbox.received()) == emails + 1 or _no(), timeout=30)
    assert [m["To"] for m in shop.mailbox.received()[emails:]] == ["after@example.com"]
    settled(shop)


def test_a_row_corrupted_by_sql_is_reported_by_a_dry_run_then_repaired(shop: Shop) -> None:
    content = checksums(shop.db, skip_times=True)
    shop.db.execute("UPDATE transactions SET status = 'failed', amount = 1 "
                    "WHERE transaction_id = 'tx-paid'")
    shop.db.execute("UPDATE bookings SET late_payment = true WHERE reference = 'BK-PAID'")
    shop.db.execute("INSERT INTO transactions SELECT 'tx-bogus', source, booking_reference, "
                    "source_account, destination_account, provider_reference, amount, currency, "
                    "status, failure_reason, refunded_amount, disputed, created_at, "
                    "processed_at, updated_at, last_offset FROM transactions "
                    "WHERE transaction_id = 'tx-paid'")
    shop.db.execute("DELETE FROM events WHERE \"offset\" = 3")

    report = json.loads(shop.rebuild("--dry-run", "--json").stdout)
    diffs = {d["table"]: d for d in report["diffs"]}
    counts = {t: (d["added"], d["removed"], d["changed"]) for t, d in diffs.items()}
    assert counts == {"events": (1, 0, 0), "transactions": (0, 1, 1), "bookings": (0, 0, 1),
                      "email_outbox": (0, 0, 0)}
    examples = "\n".join(e for d in report["diffs"] for e in d["examples"])
    assert "changed transaction_id 'tx-paid', source 'transactions': amount: 1 -> 250.0" in examples
    assert "status: 'failed' -> 'succeeded'" in examples
    assert "removed transaction_id 'tx-bogus'" in examples
    assert "changed reference 'BK-PAID': late_payment: True -> False" in examples
    assert "added offset 3" in examples
    text = shop.hookline("rebuild", "--dry-run").stdout
    assert "transactions: +0 added, -1 removed, ~1 changed" in text

    shop.rebuild()
    assert checksums(shop.db, skip_times=True) == content
    assert scalar(shop.db, "SELECT count(*) FROM email_outbox WHERE status <> 'sent'") == 0
    settled(shop)


def test_a_failed_rebuild_leaves_the_live_tables_untouched(shop: Shop) -> None:
    before = checksums(shop.db)
    with psycopg.connect(shop.db.info.dsn) as holder:
        holder.execute("SELECT count(*) FROM bookings")  # holds its lock until rollback
        failed = shop.hookline("rebuild", "--lock-wait", "3")
        assert shop.pipeline.get("/v1/bookings/BK-PAID").status_code == 200
        holder.rollback()
    assert failed.returncode == 1
    assert "rebuild failed, the live projections are untouched" in failed.stderr
    assert "stayed locked" in failed.stderr
    assert checksums(shop.db) == before
    assert scalar(shop.db, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s",
                  "hookline%") == 0


def rebuild_while_posting(shop: Shop) -> list[int]:
    """A rebuild while payments for bookings BK-D0 … BK-D6 keep arriving; the numbers posted."""
    stop, posted = threading.Event(), list[int]()

    def keep_posting() -> None:
        while not stop.is_set():
            number = len(posted)
            post_payment(shop.pipeline, f"tx-during-{number}", f"BK-D{number % 7}",
                         "succeeded", amount=f"{number}.50")
            posted.append(number)
    poster = threading.Thread(target=keep_posting, daemon=True)
    poster.start()
    try:
        eventually(lambda: len(posted) > 20 or _no(), timeout=30)
        started = len(posted)
        done = shop.rebuild()
        during = len(posted) - started
    finally:
        stop.set()
        poster.join(30)
    assert "swapped in" in done.stdout
    assert during > 10  # the projectors kept writing while the rebuild replayed and swapped
    return posted


def test_a_rebuild_while_webhooks_keep_arriving_swaps_in_at_the_live_checkpoint(
        shop: Shop) -> None:
    posted = rebuild_while_posting(shop)
    projector = shop.pipeline.processes["projector"]
    assert projector.alive
    assert "Traceback" not in projector.output()

    def all_projected() -> None:
        assert scalar(shop.db, "SELECT count(*) FROM transactions WHERE transaction_id LIKE %s",
                      "tx-during-%") == len(posted)
        end = scalar(shop.db, "SELECT last_offset FROM consumer_offsets")
        assert scalar(shop.db, "SELECT count(*) FROM events") == end + 1  # no offset lost
    eventually(all_projected, timeout=40)
    report = json.loads(shop.rebuild("--dry-run", "--json").stdout)
    assert [(d["added"], d["removed"], d["changed"]) for d in report["diffs"]] == [(0, 0, 0)] * 4
