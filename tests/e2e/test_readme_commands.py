"""The README's two commands, as a newcomer would run them, from a fresh clone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL, PG_ADMIN, drop_database
from tests.processes import eventually, output_lines, up_binds

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The commands of the first code block of README.md, comments stripped."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert block, "README.md has no sh code block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def test_readme_first_screen_gives_exactly_two_commands_and_ci_runs_the_second() -> None:
    readme = (REPO / "README.md").read_text()
    commands = readme_commands()
    assert len(commands) == 2
    assert readme.index("```sh") < 1500, "the commands must be on the first screen"
    assert (REPO / commands[0]).exists()
    assert "hookline up" in (REPO / commands[0]).read_text()
    assert commands[1] in (REPO / ".ci/run").read_text()


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "hookline"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    return clone


@pytest.fixture
def isolated_env() -> Iterator[dict[str, str]]:
    database = f"hookline_readme_{uuid.uuid4().hex[:8]}"
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOOKLINE_", "VIRTUAL_ENV", "PROMETHEUS_"))}
    env.update({
        "HOOKLINE_DATABASE_URL": f"{base}/{database}",
        "HOOKLINE_AMQP_URL": AMQP_URL,
        "HOOKLINE_STREAM": f"hookline.readme.{uuid.uuid4().hex[:8]}",
    })
    env.update(up_binds())
    yield env
    drop_database(database)


def test_readme_up_command_runs_the_pipeline_from_a_fresh_clone(
        fresh_clone: Path, isolated_env: dict[str, str]) -> None:
    up = subprocess.Popen(["bash", "-c", readme_commands()[0]], cwd=fresh_clone,
                          env=isolated_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    lines = output_lines(up)
    try:
        post = eventually(lambda: _line_after(lines, "Post a sample webhook:"), timeout=300,
                          interval=1)
        read_back = _line_after(lines, "Then read it back:")
        posted = subprocess.run(["bash", "-c", post], capture_output=True, text=True,
                                check=True, timeout=30)
        assert "202" in posted.stdout.splitlines()[0], posted.stdout

        def projected() -> None:
            answer = subprocess.run(["bash", "-c", read_back], capture_output=True, text=True,
                                    timeout=30)
            assert '"status":"succeeded"' in answer.stdout, answer.stdout
        eventually(projected, timeout=60)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)
    output = "".join(lines)
    assert code == 0, output[-3000:]
    assert "hookline: stopped" in output
    assert "Traceback" not in output, output[-3000:]


def _line_after(lines: list[str], heading: str) -> str:
    text = [line.rstrip("\n") for line in lines]
    assert heading in text, "banner not printed yet"
    return text[text.index(heading) + 1].strip()
