"""operator rejections: records an operator told the projector to reject without interpreting

`hookline events reject OFFSET [--partition K] --reason …` adds a row; the projector and a
rebuild project that record `rejected` with the reason when they reach it.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-05 07:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'operator_rejections',
        sa.Column('partition', sa.SmallInteger(), nullable=False),
        sa.Column('offset', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('rejected_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('partition', 'offset', name='operator_rejections_pkey'),
    )


def downgrade() -> None:
    op.drop_table('operator_rejections')
