"""The models and the migrations describe the same schema."""

from __future__ import annotations

from alembic import command

from projections.schema import alembic_config


def test_a_freshly_migrated_database_has_no_drift_from_the_models(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises when autogenerate would add anything


def test_every_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    command.check(config)
