"""hookline as a package user gets it: the wheel, installed (not editable) into a fresh venv
outside the checkout, finds its migrations and templates inside itself, and runs `hookline up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson
import psycopg
import pytest
import requests

from tests.conftest import PG_ADMIN, _db_url, drop_database
from tests.processes import (
    TOKEN,
    TRANSACTIONS_SECRET,
    descendants,
    eventually,
    has_line,
    output_lines,
    process_env,
    running,
    signed_transaction,
    up_binds,
)

ROOT = Path(__file__).resolve().parents[2]


def outside(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without what would let the venv's python import the checkout."""
    return {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=outside(os.environ),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the locked dependencies and the wheel."""
    where = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", where / "dist",
        ROOT, cwd=where)
    [wheel] = (where / "dist").glob("hookline-*.whl")
    run(sys.executable, "-m", "venv", where / "venv", cwd=where)
    pip = (where / "venv/bin/pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, "--require-hashes", "-r", ROOT / "requirements.lock", cwd=where)
    run(*pip, "--no-deps", wheel, cwd=where)
    return where / "venv"


def test_the_installed_wheel_migrates_a_new_database_from_outside_the_checkout(
        venv: Path, tmp_path: Path) -> None:
    where = run(venv / "bin/python", "-c",
                "import hookline.mail.outbox as m; print(m.__file__); m.render", cwd=tmp_path)
    assert str(venv) in where
    assert str(ROOT) not in where

    name = f"hookline_t_wheel_{uuid.uuid4().hex[:8]}"
    try:
        run("env", f"HOOKLINE_DATABASE_URL={_db_url(name)}", venv / "bin/hookline",
            "migrate", cwd=tmp_path)
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}") as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        newest = sorted(p.name for p in (ROOT / "hookline/db/migrations/versions").glob("0*.py"))
        assert row is not None
        assert newest[-1].startswith(row[0])
    finally:
        drop_database(name)


@pytest.fixture
def up(venv: Path, env: dict[str, str], tmp_path: Path
       ) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], list[str]]]:
    """The wheel's `hookline up` in a process group of its own, started outside the checkout;
    it, its binds and its output lines. Whatever a failed test leaves running is killed."""
    binds = up_binds()
    full = {**outside(process_env({**env, **binds})), "HOOKLINE_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([str(venv / "bin/hookline"), "up"], cwd=tmp_path, env=full,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines = output_lines(process)
    children: set[int] = set()
    try:
        eventually(lambda: has_line(lines, "hookline is up"), timeout=120, interval=0.5)
        children |= descendants(process.pid)
        yield process, binds, lines
    finally:
        children |= descendants(process.pid)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in running(children):
            os.kill(pid, signal.SIGKILL)


def test_the_installed_wheel_runs_up_until_ctrl_c_stops_every_process(
        up: tuple[subprocess.Popen[str], dict[str, str], list[str]]) -> None:
    process, binds, lines = up
    body = {"transaction_id": f"tx-wheel-{uuid.uuid4().hex[:8]}", "source_account": "acct-a",
            "destination_account": "acct-hotel", "amount": "12.50", "currency": "EUR"}
    raw = orjson.dumps(body)
    posted = requests.post(f"http://{binds['HOOKLINE_INGEST_BIND']}/v1/webhooks/transactions",
                           data=raw, headers=signed_transaction(TRANSACTIONS_SECRET, raw),
                           timeout=30)
    assert posted.status_code == 202, posted.text

    def projected() -> None:
        got = requests.get(
            f"http://{binds['HOOKLINE_API_BIND']}/v1/transactions/{body['transaction_id']}",
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert got.status_code == 200, got.text
        assert got.json()["amount"] == body["amount"]

    eventually(projected, timeout=60, interval=0.5)
    console = f"http://{binds['HOOKLINE_API_BIND']}/console"  # templates and assets inside
    assert "Operator token" in requests.get(f"{console}/sign-in", timeout=10).text
    assert requests.get(f"{console}/static/console.css", timeout=10).status_code == 200
    children = descendants(process.pid)
    assert len(children) >= 6, children  # devsmtp, front, ingest, api, projector, mailer, …

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal `hookline up` runs in
    assert process.wait(timeout=60) == 0, "".join(lines)[-3000:]

    def none_left() -> None:
        assert not running(children), running(children)

    eventually(none_left, timeout=10)
