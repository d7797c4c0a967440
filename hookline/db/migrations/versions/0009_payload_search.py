"""payload search: a full-text index of each record's payload, for GET /v1/events?q=

The words of every string and number of the payload (the `simple` configuration: no stemming,
no stop words), searched as a phrase. Chosen over a trigram index of the payload's text by
bench/search.py at a million records: trigrams find parts of words too, but took 2.5 times the
space and 6 times the build time, seconds for a common word, and slowed the projector's COPY
three times more.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 03:20:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VECTOR = "jsonb_to_tsvector('simple'::regconfig, payload, '[\"string\", \"numeric\"]'::jsonb)"


def upgrade() -> None:
    # built concurrently: the projector keeps writing while a million payloads are indexed
    with op.get_context().autocommit_block():
        # a build that failed half way leaves an invalid index of that name behind
        op.drop_index('events_payload_search', table_name='events', if_exists=True,
                      postgresql_concurrently=True)
        op.create_index('events_payload_search', 'events', [sa.text(VECTOR)], unique=False,
                        postgresql_using='gin', postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('events_payload_search', table_name='events',
                      postgresql_concurrently=True)
