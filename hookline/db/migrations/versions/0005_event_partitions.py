"""event partitions: an events row is keyed by its partition and its offset in that partition

With HOOKLINE_PARTITIONS=N the log is N streams, each numbering its records from 0; every
record so far was in the one stream, partition 0.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 04:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the operator API lists events newest offset first, partition breaking ties
FILTERED = ('source', 'type', 'outcome')


def upgrade() -> None:
    op.add_column('events', sa.Column('partition', sa.SmallInteger(), server_default='0',
                                      nullable=False))
    op.drop_constraint('events_pkey', 'events', type_='primary')
    op.create_primary_key('events_pkey', 'events', ['offset', 'partition'])
    for column in FILTERED:
        op.drop_index(f'events_{column}', table_name='events')
        op.create_index(f'events_{column}', 'events', [column, 'offset', 'partition'])


def downgrade() -> None:
    op.execute('DELETE FROM events WHERE "partition" <> 0')
    for column in FILTERED:
        op.drop_index(f'events_{column}', table_name='events')
        op.create_index(f'events_{column}', 'events', [column, 'offset'])
    op.drop_constraint('events_pkey', 'events', type_='primary')
    op.create_primary_key('events_pkey', 'events', ['offset'])
    op.drop_column('events', 'partition')
