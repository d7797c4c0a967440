"""The models and the migrations describe the same schema."""

from __future__ import annotations

from decimal import Decimal

import psycopg
from alembic import command

from hookline.db.schema import alembic_config


def test_a_freshly_migrated_database_has_no_drift_from_the_models(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises when autogenerate would add anything


def test_every_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    command.check(config)


def test_transaction_identity_carries_every_existing_row_over(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "0005")
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO transactions (transaction_id, source, status, created_at, "
                     "processed_at, updated_at, last_offset, amount, currency) VALUES "
                     "('pi_1', 'stripe', 'pending', now(), now(), now(), 7, 150, 'EUR')")
        command.upgrade(config, "0006")
        assert conn.execute("SELECT transaction_id, source, status, amount, trusted "
                            "FROM transactions").fetchall() == [
            ("pi_1", "stripe", "pending", Decimal(150), True)]
        # the same id from another source is another row now
        conn.execute("INSERT INTO transactions (transaction_id, source, status, created_at, "
                     "processed_at, updated_at, last_offset) VALUES "
                     "('pi_1', 'transactions', 'succeeded', now(), now(), now(), 8)")
        assert conn.execute("SELECT count(*) FROM transactions").fetchone() == (2,)
