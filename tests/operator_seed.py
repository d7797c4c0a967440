"""Projection rows written straight by SQL, in the shapes the projector writes, for the
operator API's tests: many ties on every sort key, nulls where the schema allows them."""

from __future__ import annotations

from typing import Any

import psycopg

TRANSACTIONS = """
INSERT INTO transactions (transaction_id, source, booking_reference, source_account,
    destination_account, amount, currency, status, refunded_amount, disputed, created_at,
    processed_at, updated_at, last_offset)
SELECT %(prefix)s || lpad(i::text, 7, '0'),
       (ARRAY['stripe', 'chapa', 'transactions'])[1 + i %% 3],
       CASE WHEN i %% 4 = 0 THEN NULL ELSE 'BK-' || (i %% %(references)s::int) END,
       'acct-' || i, 'acct-hotel', (i %% 900 + 1) + 0.25, 'EUR',
       (ARRAY['pending', 'succeeded', 'succeeded', 'succeeded', 'failed', 'refunded',
              'partially_refunded', 'timed_out'])[1 + (i * 7) %% 8],
       CASE WHEN i %% 13 = 0 THEN 1.25 ELSE 0 END,
       i %% 97 = 0,
       timestamptz '2026-01-01 00:00Z' + (i %% %(moments)s::int) * interval '1 minute',
       now(), now(), i
FROM generate_series(%(first)s::int, %(last)s::int) AS i
"""

BOOKINGS = """
INSERT INTO bookings (reference, status, customer_email, customer_name, total_amount, currency,
    created_at, expires_at, late_payment, amount_mismatch, updated_at, last_offset)
SELECT 'BK-' || i,
       (ARRAY['pending', 'confirmed', 'confirmed', 'cancelled', 'expired', 'refunded'])
           [1 + (i * 5) %% 6],
       CASE WHEN i %% 50 = 0 THEN NULL ELSE 'guest' || (i %% 300) || '@example.com' END,
       'Guest ' || i, 250.00, 'EUR',
       CASE WHEN i %% 50 = 0 THEN NULL
            ELSE timestamptz '2026-01-01 00:00Z' + (i %% %(moments)s::int) * interval '1 minute'
       END,
       timestamptz '2026-01-01 00:15Z' + (i %% %(moments)s::int) * interval '1 minute',
       i %% 53 = 0, i %% 71 = 0, now(), i
FROM generate_series(%(first)s::int, %(last)s::int) AS i
"""

EVENTS = """
INSERT INTO events ("offset", "partition", id, source, type, subject, received_at, projected_at,
    outcome, error, payload)
SELECT i / %(partitions)s::int, i %% %(partitions)s::int, source || ':evt-' || i, source,
       CASE source WHEN 'bookings' THEN 'booking.created' WHEN 'scheduler' THEN 'booking.expired'
                   WHEN 'chapa' THEN 'charge.success' WHEN 'stripe' THEN
                       (ARRAY['payment_intent.succeeded', 'charge.refunded', 'plan.created'])
                           [1 + i %% 3]
                   ELSE 'transaction.succeeded' END,
       'BK-' || (i %% %(references)s::int),
       timestamptz '2026-01-01 00:00Z' + i * interval '1 second', now(),
       CASE i %% 20 WHEN 0 THEN 'rejected' WHEN 1 THEN 'duplicate' WHEN 2 THEN 'ignored'
                    ELSE 'applied' END,
       CASE WHEN i %% 20 = 0 THEN 'amount: missing' END,
       jsonb_build_object('n', i, 'amount', 10.990)
FROM generate_series(%(first)s::int, %(last)s::int) AS i,
     LATERAL (SELECT CASE WHEN i %% 101 = 0 THEN 'scheduler'
                          ELSE (ARRAY['stripe', 'stripe', 'stripe', 'stripe', 'stripe', 'chapa',
                                      'chapa', 'transactions', 'transactions', 'bookings'])
                               [1 + i %% 10] END AS source) AS chosen
"""

EMAILS = """
INSERT INTO email_outbox (event_id, template, booking_reference, recipient, context, subject,
    status, attempts, next_attempt_at, last_error, sent_at, created_at)
SELECT 'bookings:evt-' || i,
       (ARRAY['booking_confirmation', 'payment_confirmation', 'payment_failure'])[1 + i %% 3],
       'BK-' || (i %% %(references)s::int), 'guest' || (i %% 300) || '@example.com', '{}',
       'Your booking', s.status, CASE s.status WHEN 'sent' THEN 1 WHEN 'dead' THEN 8 ELSE 2 END,
       now(), CASE WHEN s.status IN ('failed', 'dead') THEN '550 mailbox unavailable' END,
       CASE WHEN s.status = 'sent' THEN now() END,
       timestamptz '2026-01-01 00:00Z' + i * interval '1 second'
FROM generate_series(%(first)s::int, %(last)s::int) AS i,
     LATERAL (SELECT CASE WHEN i %% 10 < 7 THEN 'sent' WHEN i %% 10 = 7 THEN 'pending'
                          WHEN i %% 10 = 8 THEN 'failed' ELSE 'dead' END AS status) AS s
"""


def seed(conn: psycopg.Connection[Any], transactions: int = 0, bookings: int = 0,
         events: int = 0, emails: int = 0, moments: int = 40, references: int = 500,
         first: int = 1, prefix: str = "tx-", partitions: int = 1) -> None:
    """Rows numbered from `first`; `moments` distinct created_at values, so many ties. Event i
    is at offset i // partitions of partition i % partitions."""
    for query, count in ((TRANSACTIONS, transactions), (BOOKINGS, bookings),
                         (EVENTS, events), (EMAILS, emails)):
        if count:
            conn.execute(query, {"first": first, "last": first + count - 1,
                                 "moments": moments, "references": references,
                                 "prefix": prefix, "partitions": partitions})
