"""spine: events, transactions, checkpoints

Revision ID: 0001
Revises:
Create Date: 2026-11-22 01:24:15.396244
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('consumer_offsets',
    sa.Column('consumer', sa.String(length=100), nullable=False),
    sa.Column('last_offset', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('consumer')
    )
    op.create_table('events',
    sa.Column('offset', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('projected_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('offset')
    )
    op.create_index('events_first_id', 'events', ['id'], unique=True, postgresql_where=sa.text("outcome <> 'duplicate'"))
    op.create_index('events_subject', 'events', ['subject', 'offset'], unique=False)
    op.create_table('transactions',
    sa.Column('transaction_id', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('booking_reference', sa.Text(), nullable=True),
    sa.Column('source_account', sa.Text(), nullable=True),
    sa.Column('destination_account', sa.Text(), nullable=True),
    sa.Column('provider_reference', sa.Text(), nullable=True),
    sa.Column('amount', sa.Numeric(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('refunded_amount', sa.Numeric(), server_default='0', nullable=False),
    sa.Column('disputed', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_offset', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('transaction_id')
    )
    op.create_index('transactions_booking_reference', 'transactions', ['booking_reference'], unique=False)


def downgrade() -> None:
    op.drop_index('transactions_booking_reference', table_name='transactions')
    op.drop_table('transactions')
    op.drop_index('events_subject', table_name='events')
    op.drop_index('events_first_id', table_name='events', postgresql_where=sa.text("outcome <> 'duplicate'"))
    op.drop_table('events')
    op.drop_table('consumer_offsets')
