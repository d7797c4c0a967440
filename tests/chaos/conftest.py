"""The chaos scenarios' world, and the figures table printed and written at the end of a run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hookline.config import load_settings
from tests.chaos import figures
from tests.chaos.harness import BOUND, Chaos, Mix, Senders
from tests.chaos.webhooks import Secrets
from tests.faults.support import PrivateBroker
from tests.mailbox import Mailbox
from tests.processes import running_pipeline


@pytest.fixture
def chaos(private_broker: PrivateBroker, private_database: str, private_stream: str,
          mailbox: Mailbox, tmp_path: Path) -> Iterator[Chaos]:
    """ingest (two workers), projector, mailer and scheduler on the private broker and
    cluster, with every source's secret set, and a sender for each of them. (A scenario that
    stops the broker asks for `broker`, which starts it again after the test.)"""
    with running_chaos({"HOOKLINE_AMQP_URL": private_broker.url}, private_database,
                       private_stream, mailbox, tmp_path) as world:
        yield world


@contextmanager
def running_chaos(broker_env: dict[str, str], database_url: str, stream: str, mailbox: Mailbox,
                  tmp_path: Path) -> Iterator[Chaos]:
    """The chaos world on the broker `broker_env` names (a node, or a cluster's nodes)."""
    secrets = Secrets()
    env = {"HOOKLINE_STREAM": stream,
           "HOOKLINE_DATABASE_URL": database_url, "HOOKLINE_SMTP_URL": mailbox.url,
           "HOOKLINE_PUBLISH_TIMEOUT": str(BOUND), "HOOKLINE_PROJECTOR_BATCH": "100",
           "HOOKLINE_MAIL_BACKOFF_BASE": "0.2", "HOOKLINE_MAIL_MAX_ATTEMPTS": "40",
           "HOOKLINE_SCHEDULE_INTERVAL": "1", "HOOKLINE_BOOKING_TTL": "20s", **broker_env,
           **secrets.env()}
    with running_pipeline(env, tmp_path, parts=("ingest", "projector")) as pipeline:
        pipeline.start_mailer()
        pipeline.start_scheduler()
        senders = Senders(pipeline.ingest_url, secrets)
        yield Chaos(pipeline, load_settings(env), database_url, mailbox, senders,
                    Mix(uuid.uuid4().hex[:6]), tmp_path)
        senders.close()  # kept-alive connections would hold ingest's workers at its stop


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """CI shows the table at the end of the run; docs/reliability.md keeps it."""
    if not figures.RECORDED and not figures.CLUSTER_RECORDED:
        return
    figures.write_doc()
    terminalreporter.write_sep("=", f"reliability figures (written to {figures.DOC.name})")
    terminalreporter.write_line(figures.table(figures.merged_rows()))
    terminalreporter.write_line(figures.table(figures.cluster_rows(), figures.CLUSTER_COLUMNS))
