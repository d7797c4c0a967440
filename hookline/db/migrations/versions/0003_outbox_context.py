"""outbox context: the mailer renders emails at send time, from template + context

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 02:00:31.816391
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('email_outbox', sa.Column('context', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.alter_column('email_outbox', 'subject',
               existing_type=sa.TEXT(),
               nullable=True)
    op.alter_column('email_outbox', 'body_text',
               existing_type=sa.TEXT(),
               nullable=True)
    op.alter_column('email_outbox', 'body_html',
               existing_type=sa.TEXT(),
               nullable=True)


def downgrade() -> None:
    # rows not yet sent have no rendered parts: the old schema requires text
    op.execute("UPDATE email_outbox SET subject = coalesce(subject, ''), "
               "body_text = coalesce(body_text, ''), body_html = coalesce(body_html, '')")
    op.alter_column('email_outbox', 'body_html',
               existing_type=sa.TEXT(),
               nullable=False)
    op.alter_column('email_outbox', 'body_text',
               existing_type=sa.TEXT(),
               nullable=False)
    op.alter_column('email_outbox', 'subject',
               existing_type=sa.TEXT(),
               nullable=False)
    op.drop_column('email_outbox', 'context')
