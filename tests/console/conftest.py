"""One console per module: the API app (create_api) over a seeded copy of the test database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import create_engine
from werkzeug.serving import BaseWSGIServer, make_server

from hookline.config import Settings, load_settings
from hookline.log.topology import ensure_stream
from hookline.web.api import create_api
from tests.conftest import (
    AMQP_URL,
    _db_url,
    copy_database,
    delete_streams,
    drop_database,
    new_stream,
)
from tests.console.seed import SECRET, seed_console, seed_rejected
from tests.processes import TOKEN

VIEWER = "viewer-token-" + "v" * 24  # a viewer's token: may look, may not act


@dataclass
class Console:
    settings: Settings
    app: Flask
    db: psycopg.Connection[Any]
    dead_email: int


@pytest.fixture(scope="module")
def console(template_database: str) -> Iterator[Console]:
    name = copy_database(template_database)
    url = _db_url(name)
    settings = load_settings({"HOOKLINE_DATABASE_URL": url, "HOOKLINE_AMQP_URL": AMQP_URL,
                              "HOOKLINE_STREAM": new_stream(),
                              "HOOKLINE_OPERATOR_TOKENS": f"{TOKEN},viewer:viewer:{VIEWER}",
                              "HOOKLINE_CONSOLE_SECRET": SECRET})
    engine = create_engine(url, pool_size=4)
    ensure_stream(settings)  # an empty log: its end is read, as in production
    try:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as db:
            dead = seed_console(db)
            seed_rejected(settings, db)  # the projector's checkpoint at the log's end
            yield Console(settings, create_api(settings, engine), db, dead)
    finally:
        engine.dispose()
        drop_database(name)
        delete_streams(settings.stream)


@pytest.fixture(scope="module")
def served(console: Console) -> Iterator[str]:
    """The console on a free port of this machine, served by werkzeug in a thread."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, console.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
