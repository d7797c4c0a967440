"""bookings, the email outbox, and the scheduler's indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:33:35.938759
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('bookings',
    sa.Column('reference', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('customer_email', sa.Text(), nullable=True),
    sa.Column('customer_name', sa.Text(), nullable=True),
    sa.Column('destination', sa.Text(), nullable=True),
    sa.Column('travel_date', sa.Date(), nullable=True),
    sa.Column('return_date', sa.Date(), nullable=True),
    sa.Column('travelers', sa.Integer(), nullable=True),
    sa.Column('total_amount', sa.Numeric(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_reason', sa.Text(), nullable=True),
    sa.Column('late_payment', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('amount_mismatch', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_offset', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('reference')
    )
    op.create_index('bookings_pending_expiry', 'bookings', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_table('email_outbox',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('template', sa.String(length=50), nullable=False),
    sa.Column('booking_reference', sa.Text(), nullable=True),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('body_text', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'template', name='email_outbox_event_template')
    )
    op.create_index('email_outbox_open', 'email_outbox', ['status', 'next_attempt_at'], unique=False, postgresql_where=sa.text("status <> 'sent'"))
    op.create_index('transactions_pending_since', 'transactions', ['created_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_index('transactions_pending_since', table_name='transactions', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('email_outbox_open', table_name='email_outbox', postgresql_where=sa.text("status <> 'sent'"))
    op.drop_table('email_outbox')
    op.drop_index('bookings_pending_expiry', table_name='bookings', postgresql_where=sa.text("status = 'pending'"))
    op.drop_table('bookings')
