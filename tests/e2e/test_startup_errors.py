"""Start-up errors are one sentence: the variable or the masked URL, what is wrong, no traceback."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import AMQP_URL
from tests.processes import UNSET, free_port, process_env, running_pipeline

PASSWORD = "s3cret"


def fails_in_one_sentence(command: str, env: dict[str, str]) -> str:
    """Run `hookline COMMAND`, expect it to exit non-zero with exactly one line; return it."""
    result = subprocess.run([sys.executable, "-m", "hookline", command],
                            env=process_env(env), capture_output=True, text=True, timeout=60,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert PASSWORD not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("hookline: ")
    return lines[0]


def closed_broker() -> str:
    return f"amqp://guest:{PASSWORD}@127.0.0.1:{free_port()}/%2F"


def closed_database() -> str:
    return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{free_port()}/x"


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("HOOKLINE_MAX_BODY_BYTES", "abc", "a positive whole number of bytes; got 'abc'"),
    ("HOOKLINE_BOOKING_TTL", "soon", "a duration such as"),
    ("HOOKLINE_INGEST_BIND", "nonsense", "HOST:PORT; got 'nonsense'"),
    ("HOOKLINE_PUBLISH_TIMEOUT", "inf", "a positive number of seconds"),
    ("HOOKLINE_AMQP_URL", f"http://guest:{PASSWORD}@broker", "an amqp:// or amqps:// URL"),
])
def test_an_invalid_setting_names_the_variable_and_what_is_wrong(
        variable: str, value: str, expected: str) -> None:
    line = fails_in_one_sentence("ingest", {variable: value})
    assert line.startswith(f"hookline: invalid setting: {variable} must be ")
    assert expected in line


@pytest.mark.parametrize("command", ["ingest", "project", "api", "migrate"])
def test_every_command_refuses_an_invalid_setting(command: str) -> None:
    line = fails_in_one_sentence(command, {"HOOKLINE_MAX_BODY_BYTES": "abc"})
    assert "HOOKLINE_MAX_BODY_BYTES" in line


def test_ingest_on_an_address_another_program_listens_on_stops_at_once_saying_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        line = fails_in_one_sentence("ingest", {"HOOKLINE_INGEST_BIND": bind})
    assert line.startswith(f"hookline: invalid setting: cannot listen on {bind}: "), line
    assert "in use" in line


def test_a_file_variant_naming_a_missing_file_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    line = fails_in_one_sentence("ingest", {"HOOKLINE_TRANSACTIONS_SECRETS_FILE": str(missing)})
    assert "HOOKLINE_TRANSACTIONS_SECRETS_FILE" in line
    assert str(missing) in line
    assert "cannot be read" in line


def test_a_malformed_webhook_secret_is_named_without_its_value() -> None:
    secret = f"whsec_{PASSWORD}*not*base64"
    line = fails_in_one_sentence("ingest", {"HOOKLINE_TRANSACTIONS_SECRETS": secret})
    assert "HOOKLINE_TRANSACTIONS_SECRETS" in line
    assert "not valid base64" in line


@pytest.mark.parametrize(("command", "variable", "value", "expected"), [
    ("ingest", "HOOKLINE_TRANSACTIONS_SECRETS", ",", "is set but holds no secret"),
    ("ingest", "HOOKLINE_TRANSACTIONS_SECRETS", " , ", "is set but holds no secret"),
    ("ingest", "HOOKLINE_CHAPA_SECRETS", f"chapa-{PASSWORD}-0123456789,", "has an empty item"),
    ("ingest", "HOOKLINE_STRIPE_SECRETS", "x", "must hold secrets of at least 16 bytes"),
    ("ingest", "HOOKLINE_BOOKINGS_SECRETS",
     "whsec_" + base64.b64encode(b"s3cret-15-bytes").decode(),
     "must hold secrets of at least 16 bytes each once decoded"),
    ("api", "HOOKLINE_OPERATOR_TOKENS", PASSWORD, "must hold tokens of at least 16 bytes"),
])
def test_a_blank_or_short_secret_stops_the_process_naming_the_variable(
        command: str, variable: str, value: str, expected: str) -> None:
    line = fails_in_one_sentence(command, {variable: value})
    assert line.startswith(f"hookline: invalid setting: {variable} "), line
    assert expected in line


def test_an_empty_secrets_file_stops_ingest(tmp_path: Path) -> None:
    empty = tmp_path / "transactions_secrets"
    empty.write_text("\n")
    line = fails_in_one_sentence("ingest", {"HOOKLINE_TRANSACTIONS_SECRETS_FILE": str(empty)})
    assert line.startswith("hookline: invalid setting: HOOKLINE_TRANSACTIONS_SECRETS_FILE is set "
                           "but holds no secret"), line


def test_a_well_known_development_token_is_refused_unless_in_development(
        database_url: str, stream: str, tmp_path: Path) -> None:
    env = {"HOOKLINE_DATABASE_URL": database_url, "HOOKLINE_AMQP_URL": AMQP_URL,
           "HOOKLINE_STREAM": stream, "HOOKLINE_OPERATOR_TOKENS": "dev-operator-token"}
    line = fails_in_one_sentence("api", env)
    assert line.startswith("hookline: invalid setting: HOOKLINE_OPERATOR_TOKENS holds a "
                           "well-known development value"), line
    assert "dev-operator-token" not in line
    with running_pipeline({**env, "HOOKLINE_ENV": "development"}, tmp_path,
                          parts=("api",)) as running:
        assert running.get("/v1/status", token="dev-operator-token").status_code == 200


def test_a_well_known_development_password_is_refused_in_a_url() -> None:
    url = "amqp://hookline:hookline-dev-rabbitmq@127.0.0.1:5672/%2F"
    line = fails_in_one_sentence("ingest", {"HOOKLINE_AMQP_URL": url})
    assert line.startswith("hookline: invalid setting: HOOKLINE_AMQP_URL holds a well-known "
                           "development value"), line
    assert "hookline-dev-rabbitmq" not in line


def test_ingest_without_a_transactions_secret_refuses_to_start_naming_the_variables() -> None:
    line = fails_in_one_sentence("ingest", {"HOOKLINE_TRANSACTIONS_SECRETS": UNSET})
    assert "HOOKLINE_TRANSACTIONS_SECRETS is not set" in line
    assert "HOOKLINE_TRANSACTIONS_UNSIGNED=allow" in line


def test_an_unknown_log_level_is_a_sentence() -> None:
    line = fails_in_one_sentence("migrate", {"HOOKLINE_LOG_LEVEL": "loud"})
    assert "HOOKLINE_LOG_LEVEL" in line


@pytest.mark.parametrize("command", ["ingest", "project"])
def test_an_unreachable_broker_is_one_line_with_the_password_masked(
        command: str, database_url: str, stream: str) -> None:
    url = closed_broker()
    line = fails_in_one_sentence(command, {"HOOKLINE_AMQP_URL": url,
                                           "HOOKLINE_DATABASE_URL": database_url,
                                           "HOOKLINE_STREAM": stream})
    assert "cannot reach RabbitMQ" in line
    assert url.replace(PASSWORD, "***") in line


@pytest.mark.parametrize("command", ["project", "api", "migrate"])
def test_an_unreachable_database_is_one_line_with_the_password_masked(
        command: str, stream: str) -> None:
    url = closed_database()
    line = fails_in_one_sentence(command, {"HOOKLINE_DATABASE_URL": url,
                                           "HOOKLINE_AMQP_URL": AMQP_URL,
                                           "HOOKLINE_STREAM": stream})
    assert "cannot reach PostgreSQL" in line
    assert url.replace(PASSWORD, "***") in line


def test_a_database_without_tables_says_to_migrate(database_url: str) -> None:
    empty = database_url.rsplit("/", 1)[0] + "/postgres"
    line = fails_in_one_sentence("api", {"HOOKLINE_DATABASE_URL": empty})
    assert "hookline migrate" in line


def test_ingest_does_not_need_the_database(tmp_path: Path, stream: str) -> None:
    env = {"HOOKLINE_DATABASE_URL": closed_database(), "HOOKLINE_AMQP_URL": AMQP_URL,
           "HOOKLINE_STREAM": stream}
    with running_pipeline(env, tmp_path, parts=("ingest",)) as running:
        body = {"transaction_id": "tx-db-down", "source_account": "a",
                "destination_account": "b", "amount": "1.00", "currency": "USD"}
        answer = running.post("transactions", None, data=orjson.dumps(body),
                              headers={"Content-Type": "application/json"})
        assert answer.status_code == 202, answer.text
