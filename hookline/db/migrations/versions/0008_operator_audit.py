"""operator audit: who did what to which records, when, and how it ended

Every operator action (API, CLI, console) writes a row in the action's own transaction;
`GET /v1/audit` lists them newest first, filtered by actor, action and time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'operator_audit',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('actor', sa.Text(), nullable=False),
        sa.Column('action', sa.Text(), nullable=False),
        sa.Column('targets', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"),
                  nullable=False),
        sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=False),
        sa.CheckConstraint("outcome IN ('succeeded', 'refused', 'failed')",
                           name='operator_audit_outcome'),
        sa.PrimaryKeyConstraint('id', name='operator_audit_pkey'),
    )
    op.create_index('operator_audit_actor', 'operator_audit', ['actor', 'id'])
    op.create_index('operator_audit_action', 'operator_audit', ['action', 'id'])
    op.create_index('operator_audit_at', 'operator_audit', ['at'])


def downgrade() -> None:
    op.drop_index('operator_audit_at', table_name='operator_audit')
    op.drop_index('operator_audit_action', table_name='operator_audit')
    op.drop_index('operator_audit_actor', table_name='operator_audit')
    op.drop_table('operator_audit')
