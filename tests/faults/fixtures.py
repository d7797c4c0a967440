"""Private RabbitMQ and PostgreSQL for the tests that stop them; the machine's stay untouched.

Registered once, in tests/conftest.py, so the fault and the chaos tests share one broker and one
cluster per run (a fixture defined in two conftests is two fixtures, each started on its own)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from hookline.config import Settings
from hookline.db.schema import migrate
from tests.faults.cluster import PrivateCluster
from tests.faults.support import PG_BIN, PrivateBroker, PrivatePostgres, reap_orphans


def _require(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("private brokers and clusters are started as their service users: needs root")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    _require("rabbitmq-server", "rabbitmqctl")
    reap_orphans()
    broker = PrivateBroker()
    try:
        yield broker.start()
    finally:
        broker.destroy()


@pytest.fixture(scope="module")
def private_rabbit_cluster() -> Iterator[PrivateCluster]:
    """Three private RabbitMQ nodes joined into one cluster, shared by a module's scenarios."""
    _require("rabbitmq-server", "rabbitmqctl")
    reap_orphans()
    rabbits = PrivateCluster()
    try:
        yield rabbits.start()
    finally:
        rabbits.destroy()


@pytest.fixture
def rabbit_cluster(private_rabbit_cluster: PrivateCluster) -> Iterator[PrivateCluster]:
    """The private cluster, every node running again after the test whatever the test did."""
    yield private_rabbit_cluster
    private_rabbit_cluster.heal()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    _require("runuser", str(PG_BIN / "initdb"), str(PG_BIN / "pg_ctl"))
    reap_orphans()
    cluster = PrivatePostgres()
    try:
        yield cluster.initdb()
    finally:
        cluster.destroy()


@pytest.fixture
def broker(private_broker: PrivateBroker) -> Iterator[PrivateBroker]:
    """The private broker, running again after the test whatever the test did to it."""
    yield private_broker
    private_broker.start_app()


@pytest.fixture
def cluster(private_postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private cluster, running again after the test whatever the test did to it."""
    yield private_postgres
    private_postgres.ensure_running()


@pytest.fixture
def private_database(cluster: PrivatePostgres) -> str:
    """A migrated database of its own on the private cluster."""
    url = cluster.url(f"hookline_f_{uuid.uuid4().hex[:12]}")
    migrate(Settings(database_url=url))
    return url


@pytest.fixture
def private_stream() -> str:
    return f"hookline.faults.{uuid.uuid4().hex[:12]}"
