"""Each table's statements live in its own module of hookline.db, and agree with the models.

Read from the source and the models, without a database; the imports are checked in a fresh
interpreter, where nothing else has loaded SQLAlchemy already.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from hookline.db import checkpoints, events, outbox, transactions
from hookline.db.models import ConsumerOffset, EmailOutbox, Event, Transaction

PACKAGE = Path(__file__).resolve().parents[2] / "hookline"
STATEMENT = r"\b(FROM|INTO|UPDATE|JOIN|COPY)\s+\"?{table}\b"


def columns_of(model: type) -> list[str]:
    return [column.name for column in model.__table__.columns]  # type: ignore[attr-defined]


def test_the_outbox_lists_every_column_but_the_large_ones_in_the_models_order() -> None:
    model = columns_of(EmailOutbox)
    assert list(outbox.SHOWN) == [c for c in model if c not in outbox.LARGE]
    assert set(outbox.LARGE) <= set(model)


def test_an_enqueued_email_fills_columns_the_outbox_has() -> None:
    assert set(outbox.ENQUEUED) <= set(columns_of(EmailOutbox))
    assert {f.name for f in fields(outbox.Email)} <= set(outbox.ENQUEUED)


def test_a_claimed_email_reads_columns_the_outbox_has() -> None:
    assert {f.name for f in fields(outbox.Outgoing)} <= set(columns_of(EmailOutbox))


def test_an_email_is_owed_while_pending_or_failed() -> None:
    depth = outbox.Depth(pending=3, failed=2, dead=7, oldest_owed_seconds=1.5,
                         next_due_seconds=None)
    assert depth.owed == 5
    assert set(outbox.OWED) | set(outbox.RETRYABLE) < set(outbox.STATUSES)
    assert set(outbox.OWED) | {"dead"} == set(outbox.STATUSES) - {"sent"}


def test_the_events_and_transactions_modules_write_every_column_of_their_table() -> None:
    assert columns_of(Event) == list(events.COLUMNS)
    assert sorted(columns_of(Transaction)) == sorted(transactions.COLUMNS)
    assert ConsumerOffset.__tablename__ == checkpoints.TABLE


@pytest.mark.parametrize(("table", "owner"), [
    ("email_outbox", "db/outbox.py"), ("consumer_offsets", "db/checkpoints.py")])
def test_only_the_tables_own_module_states_sql_on_it(table: str, owner: str) -> None:
    statement = re.compile(STATEMENT.format(table=table), re.IGNORECASE)
    # the schema probe only asks whether migrations ran
    allowed = {owner, "db/schema.py"}
    found = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if "migrations" not in path.parts and statement.search(path.read_text())}
    assert found <= allowed
    assert owner in found


@pytest.mark.parametrize("module", ["hookline.processes.projector", "hookline.mail.mailer"])
def test_the_projector_and_the_mailer_load_no_sqlalchemy(module: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))"],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert loaded == "[]"
