"""`hookline rebuild` with the log in two partitions, through the real processes: every partition
replayed from offset 0 and caught up to its own live checkpoint, then one swap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hookline.config import partition_of
from tests.e2e.test_bookings import SECRET, booking, post_booking, post_payment
from tests.e2e.test_payment_providers import stripe_event
from tests.e2e.test_rebuild import STRIPE, Shop, checksums, rebuild_while_posting
from tests.mailbox import Mailbox
from tests.processes import eventually, free_port, running_pipeline, scalar

PARTITIONS = 2
NO_DIFFERENCE = [("events", 0, 0, 0), ("transactions", 0, 0, 0), ("bookings", 0, 0, 0),
                 ("email_outbox", 0, 0, 0)]


@pytest.fixture
def shop(env: dict[str, str], database_url: str, tmp_path: Path) -> Iterator[Shop]:
    mailbox = Mailbox(free_port()).start()
    env = {**env, "HOOKLINE_PARTITIONS": str(PARTITIONS), "HOOKLINE_STRIPE_SECRETS": STRIPE,
           "HOOKLINE_BOOKINGS_SECRETS": SECRET, "HOOKLINE_SMTP_URL": mailbox.url,
           "HOOKLINE_MAIL_BACKOFF_BASE": "0.2"}
    try:
        with running_pipeline(env, tmp_path) as pipeline, \
                psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as db:
            pipeline.start_mailer()
            yield Shop(pipeline, db, mailbox)
    finally:
        mailbox.stop()


def traffic(shop: Shop) -> None:
    """Bookings, their payments and payments of no booking in both partitions, each booking
    sent twice, and a payment whose records are split between the partitions."""
    p = shop.pipeline
    assert [partition_of(s, PARTITIONS) for s in ("BK-C", "BK-D", "tx-solo", "pi_p0")] == [0] * 4
    assert [partition_of(s, PARTITIONS) for s in ("BK-A", "BK-B", "tx-lone")] == [1] * 3
    for ref in ("BK-A", "BK-B", "BK-C", "BK-D"):
        post_booking(p, booking(ref, f"{ref.lower()}@example.com", f"Guest {ref}"), times=2)
    post_payment(p, "tx-c", "BK-C", "succeeded", times=2)
    post_payment(p, "tx-b", "BK-B", "failed", reason="card declined")
    post_payment(p, "tx-d", "BK-D", "pending")
    post_payment(p, "tx-solo", None, "succeeded", amount="12.00")
    post_payment(p, "tx-lone", None, "failed", amount="99.00", reason="card declined")
    # the intent names BK-A (partition 1), its refund only the intent (partition 0): the live
    # projectors see the intent first, a replay of partition 0 before 1 the refund
    shop.stripe(stripe_event("payment_intent.succeeded", "payment_intent", "evt_p_pi",
                             id="pi_p0", amount=25000, currency="eur", status="succeeded",
                             latest_charge="ch_p0", metadata={"booking_reference": "BK-A"}))
    eventually(lambda: _status(shop, "BK-A") == "confirmed" or _no())
    shop.stripe(stripe_event("charge.refunded", "charge", "evt_p_refund", id="ch_p0",
                             payment_intent="pi_p0", amount=25000, amount_captured=25000,
                             amount_refunded=5000, currency="eur", captured=True))


def checkpoints(shop: Shop) -> dict[str, int]:
    return dict(shop.db.execute("SELECT consumer, last_offset FROM consumer_offsets"))


def settled(shop: Shop) -> None:
    """Each partition projected to its end, every email sent."""
    def check() -> None:
        ends: dict[str, int] = dict(shop.db.execute(
            "SELECT 'projector.' || partition, max(\"offset\") FROM events GROUP BY partition"))
        assert checkpoints(shop) == ends
        assert scalar(shop.db, "SELECT count(*) FROM events") == sum(ends.values()) + len(ends)
        statuses: dict[str, int] = dict(shop.db.execute(
            "SELECT status, count(*) FROM email_outbox GROUP BY status").fetchall())
        assert set(statuses) == {"sent"}, statuses
        assert len(shop.mailbox.received()) == statuses["sent"]
    eventually(check, timeout=60)


def _status(shop: Shop, reference: str) -> str | None:
    status: str | None = scalar(shop.db, "SELECT status FROM bookings WHERE reference = %s",
                                reference)
    return status


def _no() -> bool:
    raise AssertionError("not yet")


def test_a_rebuild_of_two_partitions_reproduces_every_row_and_sends_no_email(
        shop: Shop) -> None:
    traffic(shop)
    settled(shop)
    assert scalar(shop.db, "SELECT count(DISTINCT partition) FROM events "
                           "WHERE subject = 'pi_p0' OR subject = 'BK-A'") == 2
    assert scalar(shop.db, "SELECT status FROM transactions WHERE transaction_id = 'pi_p0'") \
        == "partially_refunded"
    before, emails, live = checksums(shop.db), len(shop.mailbox.received()), checkpoints(shop)

    dry = json.loads(shop.rebuild("--dry-run", "--json").stdout)
    assert (dry["swapped"], dry["checkpoints"]) == (False, live)
    assert [(d["table"], d["added"], d["removed"], d["changed"]) for d in dry["diffs"]] \
        == NO_DIFFERENCE
    done = shop.rebuild()

    assert "swapped in" in done.stdout
    assert ", ".join(f"{consumer} at offset {offset:,}" for consumer, offset in
                     sorted(live.items())) in done.stdout
    records = sum(offset + 1 for offset in live.values())
    assert f"{records:,}/{records:,} records" in done.stderr  # both partitions, in one total
    assert checksums(shop.db) == before  # identical, every column of every row
    assert scalar(shop.db, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s",
                  "hookline%") == 0
    post_booking(shop.pipeline, booking("BK-E", "e@example.com", "Guest E"))
    eventually(lambda: len(shop.mailbox.received()) == emails + 1 or _no(), timeout=30)
    assert [m["To"] for m in shop.mailbox.received()[emails:]] == ["e@example.com"]
    settled(shop)


def test_a_rebuild_while_both_partitions_keep_growing_swaps_in_at_their_checkpoints(
        shop: Shop) -> None:
    traffic(shop)
    posted = rebuild_while_posting(shop)
    assert shop.pipeline.processes["projector"].alive
    assert "Traceback" not in shop.pipeline.processes["projector"].output()
    assert {partition_of(f"BK-D{n}", PARTITIONS) for n in range(7)} == {0, 1}

    eventually(lambda: scalar(shop.db, "SELECT count(*) FROM transactions WHERE "
                                       "transaction_id LIKE %s", "tx-during-%") == len(posted)
               or _no(), timeout=40)
    settled(shop)  # and no offset of either partition lost
    report = json.loads(shop.rebuild("--dry-run", "--json").stdout)
    assert [(d["table"], d["added"], d["removed"], d["changed"]) for d in report["diffs"]] \
        == NO_DIFFERENCE
