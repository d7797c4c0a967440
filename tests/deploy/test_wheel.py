"""hookline as a package user gets it: the wheel, installed (not editable) into a fresh venv
outside the checkout, finds its migrations and templates inside itself."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from tests.conftest import PG_ADMIN, _db_url

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def test_the_installed_wheel_migrates_a_new_database_from_outside_the_checkout(
        tmp_path: Path) -> None:
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path / "dist",
        ROOT, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("hookline-*.whl")
    run(sys.executable, "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    pip = (tmp_path / "venv/bin/pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, "--require-hashes", "-r", ROOT / "requirements.lock", cwd=tmp_path)
    run(*pip, "--no-deps", wheel, cwd=tmp_path)
    where = run(tmp_path / "venv/bin/python", "-c",
                "import hookline.mail.outbox as m; print(m.__file__); m.render", cwd=tmp_path)
    assert str(tmp_path / "venv") in where
    assert str(ROOT) not in where

    name = f"hookline_t_wheel_{uuid.uuid4().hex[:8]}"
    try:
        run("env", f"HOOKLINE_DATABASE_URL={_db_url(name)}", tmp_path / "venv/bin/hookline",
            "migrate", cwd=tmp_path)
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}") as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        newest = sorted(p.name for p in (ROOT / "hookline/db/migrations/versions").glob("0*.py"))
        assert row is not None
        assert newest[-1].startswith(row[0])
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
