"""operator indexes: every list of the operator API, with each of its filters, read by an index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 02:20:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, table, columns, partial index predicate); lists are read newest first by their key
INDEXES: list[tuple[str, str, list[str], str | None]] = [
    ('events_source', 'events', ['source', 'offset'], None),
    ('events_type', 'events', ['type', 'offset'], None),
    ('events_outcome', 'events', ['outcome', 'offset'], None),
    ('events_received_at', 'events', ['received_at'], None),
    ('transactions_created', 'transactions', ['created_at', 'transaction_id'], None),
    ('transactions_status', 'transactions', ['status', 'created_at', 'transaction_id'], None),
    ('transactions_source', 'transactions', ['source', 'created_at', 'transaction_id'], None),
    ('transactions_disputed', 'transactions', ['created_at', 'transaction_id'], 'disputed'),
    ('transactions_refunded', 'transactions', ['created_at', 'transaction_id'],
     'refunded_amount > 0'),
    ('bookings_created', 'bookings', ['created_at', 'reference'], None),
    ('bookings_status', 'bookings', ['status', 'created_at', 'reference'], None),
    ('bookings_customer_email', 'bookings', ['customer_email', 'created_at', 'reference'], None),
    ('bookings_late_payment', 'bookings', ['created_at', 'reference'], 'late_payment'),
    ('bookings_amount_mismatch', 'bookings', ['created_at', 'reference'], 'amount_mismatch'),
    ('email_outbox_status', 'email_outbox', ['status', 'id'], None),
    ('email_outbox_template', 'email_outbox', ['template', 'id'], None),
    ('email_outbox_booking_reference', 'email_outbox', ['booking_reference'], None),
]


def upgrade() -> None:
    # built concurrently: the projector and the mailer keep writing while a big table is indexed
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            op.create_index(name, table, columns, unique=False, postgresql_concurrently=True,
                            postgresql_where=sa.text(where) if where else None)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, _columns, _where in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
