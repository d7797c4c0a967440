"""transaction identity: a transaction is (source, transaction_id), and carries a trusted mark

Two sources may use the same id (a generic transaction named like a Stripe intent, a Chapa
tx_ref equal to one): each is its own row. Every existing row keeps its id and source; the
primary key leads with transaction_id, so a lookup by id alone (the operator API, a batch's
rows) is a key range. `trusted` is false for a row made only from reports whose sender
ingress could not verify; every row so far is trusted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 07:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the operator API's lists read newest first by (created_at, transaction_id, source)
KEYED: list[tuple[str, list[str], str | None]] = [
    ('transactions_created', [], None),
    ('transactions_status', ['status'], None),
    ('transactions_disputed', [], 'disputed'),
    ('transactions_refunded', [], 'refunded_amount > 0'),
]


def upgrade() -> None:
    op.add_column('transactions', sa.Column('trusted', sa.Boolean(), server_default='true',
                                            nullable=False))
    op.drop_constraint('transactions_pkey', 'transactions', type_='primary')
    op.create_primary_key('transactions_pkey', 'transactions', ['transaction_id', 'source'])
    _index(['created_at', 'transaction_id', 'source'])


def downgrade() -> None:
    # one row per id again: where sources share an id, the one updated last stays
    op.execute("DELETE FROM transactions t USING transactions o "
               "WHERE t.transaction_id = o.transaction_id AND t.source <> o.source "
               "AND (t.updated_at, t.source) < (o.updated_at, o.source)")
    _index(['created_at', 'transaction_id'])
    op.drop_constraint('transactions_pkey', 'transactions', type_='primary')
    op.create_primary_key('transactions_pkey', 'transactions', ['transaction_id'])
    op.drop_column('transactions', 'trusted')


def _index(key: list[str]) -> None:
    for name, leading, where in KEYED:
        op.drop_index(name, table_name='transactions')
        op.create_index(name, 'transactions', [*leading, *key],
                        postgresql_where=sa.text(where) if where else None)
