"""`hookline up`, the development runner: its processes take development values, and it prints
only an operator token it made itself."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.processes import eventually, has_line, output_lines, process_env, up_binds

CONFIGURED = "dev-operator-token"  # well known: only a development run may take it


def run_up(env: dict[str, str], workdir: Path) -> tuple[list[str], int]:
    """Start `hookline up`, wait for its banner, stop it; its lines and exit code."""
    binds = up_binds()
    full = {**process_env({**env, **binds}), "HOOKLINE_LOG_LEVEL": "WARNING"}
    full.pop("HOOKLINE_OPERATOR_TOKENS")
    full.update({k: v for k, v in env.items() if k == "HOOKLINE_OPERATOR_TOKENS"})
    up = subprocess.Popen([sys.executable, "-m", "hookline", "up"], cwd=workdir, env=full,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = output_lines(up)
    try:
        eventually(lambda: has_line(lines, "hookline is up"), timeout=120, interval=0.5)
        console = f"http://{binds['HOOKLINE_API_BIND']}/console/sign-in"  # a secret was made
        assert requests.get(console, timeout=10).status_code == 200
        if "HOOKLINE_OPERATOR_TOKENS" in env:
            api = f"http://{binds['HOOKLINE_API_BIND']}/v1/status"
            answer = requests.get(api, timeout=10,
                                  headers={"Authorization": f"Bearer {CONFIGURED}"})
            assert answer.status_code == 200, answer.text
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)
    return lines, code


def test_up_takes_a_development_token_and_never_prints_a_configured_one(
        env: dict[str, str], tmp_path: Path) -> None:
    lines, code = run_up({**env, "HOOKLINE_OPERATOR_TOKENS": CONFIGURED}, tmp_path)
    output = "".join(lines)
    assert code == 0, output[-3000:]
    assert CONFIGURED not in output
    assert "operator token: one of HOOKLINE_OPERATOR_TOKENS" in output


def test_up_prints_the_token_it_made(env: dict[str, str], tmp_path: Path) -> None:
    lines, code = run_up(env, tmp_path)
    token = next(line.split(": ", 1)[1].strip() for line in lines
                 if "operator token (made for this run)" in line)
    assert token.startswith("hookline-dev-")
    assert f"Bearer {token}" in "".join(lines)
    assert code == 0
