"""Log lines of a real process stay one per event whatever a sender puts in an id."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from tests.e2e.test_ingest_errors import signed, transaction
from tests.processes import eventually, running_pipeline

SECRET = "whsec_" + base64.b64encode(b"e2e-transactions-signing-secret!").decode()
FORGED = "2026-01-01 00:00:00,000 INFO hookline forged line"


def test_a_delivery_whose_id_holds_cr_lf_is_logged_on_one_line(
        env: dict[str, str], tmp_path: Path) -> None:
    # every publish times out, so ingest logs the refused delivery's id
    env = {**env, "HOOKLINE_TRANSACTIONS_SECRETS": SECRET, "HOOKLINE_PUBLISH_TIMEOUT": "0.000001"}
    with running_pipeline(env, tmp_path, parts=("ingest",)) as running:
        body = orjson.dumps(transaction(f"tx-evil\r\n{FORGED}\x1b[31m"))
        answer = running.post("transactions", None, data=body, headers=signed(body, SECRET))
        assert answer.status_code == 503, answer.text

        def logged_once() -> None:
            output = running.processes["ingest"].output()
            lines = [line for line in output.split("\n") if "tx-evil" in line]
            assert len(lines) == 1, output
            assert f"id=transactions:tx-tx-evil\\r\\n{FORGED}\\x1b[31m source=" in lines[0]
            assert "\r" not in output
            assert "\x1b" not in output
            assert not any(line.startswith(FORGED) for line in output.split("\n"))
        eventually(logged_once, timeout=20)
