"""Shared fixtures: real PostgreSQL and RabbitMQ, one database and one stream per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pika
import psycopg
import pytest
from psycopg import sql

from hookline.config import Settings, load_settings
from hookline.db.schema import migrate
from tests.faults.fixtures import (  # noqa: F401  (fixtures, registered here to be shared)
    broker,
    cluster,
    private_broker,
    private_database,
    private_postgres,
    private_rabbit_cluster,
    private_stream,
    rabbit_cluster,
)
from tests.mailbox import Mailbox
from tests.processes import TOKEN, Pipeline, free_port, running_pipeline

PG_ADMIN = os.environ.get("HOOKLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("HOOKLINE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
TEMPLATE = f"hookline_template_{os.getpid()}"
MAX_TEST_PARTITIONS = 4  # the stream fixture deletes S.0 … S.3 after each test


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN, autocommit=True)


def _db_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def copy_database(template: str) -> str:
    """A new database copied from `template`; its name."""
    name = f"hookline_t_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)))
    return name


@contextmanager
def copied_database(template: str) -> Iterator[str]:
    """A new database copied from `template`, its name; dropped afterwards."""
    name = copy_database(template)
    try:
        yield name
    finally:
        drop_database(name)


def new_stream() -> str:
    return f"hookline.test.{uuid.uuid4().hex[:12]}"


def delete_streams(*names: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for name in names:
        channel.queue_delete(name)  # deleting one that is not there is a no-op
    connection.close()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A database migrated once per run; each test gets a copy of it."""
    drop_database(TEMPLATE)
    migrate(Settings(database_url=_db_url(TEMPLATE)))
    yield TEMPLATE
    drop_database(TEMPLATE)


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    name = copy_database(template_database)
    yield _db_url(name)
    with suppress(psycopg.OperationalError):  # a test that stopped PostgreSQL
        drop_database(name)


@pytest.fixture
def stream() -> Iterator[str]:
    name = new_stream()
    yield name
    with suppress(pika.exceptions.AMQPError):  # a test that stopped RabbitMQ
        delete_streams(name, *(f"{name}.{k}" for k in range(MAX_TEST_PARTITIONS)))


@pytest.fixture
def settings(database_url: str, stream: str) -> Settings:
    return load_settings({
        "HOOKLINE_DATABASE_URL": database_url,
        "HOOKLINE_AMQP_URL": AMQP_URL,
        "HOOKLINE_STREAM": stream,
        "HOOKLINE_OPERATOR_TOKENS": TOKEN,
    })


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def env(database_url: str, stream: str) -> dict[str, str]:
    """The HOOKLINE_* variables a process under test runs with."""
    return {"HOOKLINE_DATABASE_URL": database_url, "HOOKLINE_AMQP_URL": AMQP_URL,
            "HOOKLINE_STREAM": stream}


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An SMTP server on a free port that keeps every message it is sent."""
    box = Mailbox(free_port()).start()
    yield box
    box.stop()


@pytest.fixture
def pipeline(env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    with running_pipeline(env, tmp_path) as running:
        yield running
