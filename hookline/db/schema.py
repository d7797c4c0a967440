"""Creating the database and migrating it to the newest schema."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy.engine import make_url

from hookline.config import Settings, mask_url
from hookline.lifecycle import Unreachable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class DatabaseUnreachable(Unreachable):
    """PostgreSQL cannot be reached; the message names the masked URL."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def ensure_database(settings: Settings) -> bool:
    """Create the database when it does not exist yet; True when it was created."""
    url = make_url(settings.database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    try:
        with psycopg.connect(admin.render_as_string(hide_password=False),
                             autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (url.database,)).fetchone()
            if not exists:
                name = sql.Identifier(url.database or "hookline")
                conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
            return not exists
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(
            f"cannot reach PostgreSQL at {mask_url(settings.database_url)}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no answer'}"
        ) from None


def migrate(settings: Settings) -> None:
    ensure_database(settings)
    command.upgrade(alembic_config(settings.database_url), "head")


def check_reachable(settings: Settings) -> None:
    try:
        with psycopg.connect(settings.psycopg_url, connect_timeout=5) as conn:
            conn.execute("SELECT 1 FROM consumer_offsets LIMIT 1")
    except psycopg.errors.UndefinedTable:
        raise DatabaseUnreachable(
            f"the database at {mask_url(settings.database_url)} has no hookline tables; "
            "run 'hookline migrate' first") from None
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        raise DatabaseUnreachable(
            f"cannot reach PostgreSQL at {mask_url(settings.database_url)}: {first}"
        ) from None
