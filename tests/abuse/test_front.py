"""`hookline front`: the HAProxy configuration it writes, and how it behaves when ingest is down
or its public address is taken."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hookline.config import Settings, load_settings
from hookline.web.front import REQUEST_DEADLINE_SECONDS, haproxy_config
from tests.abuse.conftest import CANARIES, Front, address
from tests.chaos import webhooks
from tests.processes import Process, eventually, free_port, process_env


def check(config: str, tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy, "HAProxy is not installed: apt-get install haproxy"
    (tmp_path / "haproxy.cfg").write_text(config)
    done = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("internal", ["127.0.0.1:8010", "ingest:8000", "[::1]:8010"])
def test_the_configuration_is_valid_for_addresses_and_dns_names(
        tmp_path: Path, internal: str) -> None:
    settings = load_settings({"HOOKLINE_INGEST_INTERNAL_BIND": internal,
                              "HOOKLINE_INGEST_BIND": "0.0.0.0:8000"})
    config = haproxy_config(settings)
    check(config, tmp_path)
    assert "bind 0.0.0.0:8000" in config
    assert (" resolvers system" in config) == (internal == "ingest:8000")


def test_the_whole_request_is_buffered_within_the_deadline(tmp_path: Path) -> None:
    settings = Settings(max_body_bytes=1024 * 1024)
    config = haproxy_config(settings)
    check(config, tmp_path)
    assert "option http-buffer-request" in config
    assert f"timeout http-request {REQUEST_DEADLINE_SECONDS}s" in config
    # a body up to the limit fits in one buffer: it is never passed on half received
    [bufsize] = [line.split()[1] for line in config.splitlines() if "tune.bufsize" in line]
    assert int(bufsize) > settings.max_body_bytes


@pytest.fixture
def front_alone(tmp_path: Path) -> Iterator[tuple[Process, str]]:
    """The front, with nothing listening on the internal binds."""
    public = f"127.0.0.1:{free_port()}"
    env = process_env({"HOOKLINE_INGEST_BIND": public,
                       "HOOKLINE_API_BIND": f"127.0.0.1:{free_port()}",
                       "HOOKLINE_INGEST_INTERNAL_BIND": f"127.0.0.1:{free_port()}",
                       "HOOKLINE_API_INTERNAL_BIND": f"127.0.0.1:{free_port()}"})
    process = Process(["front"], env, tmp_path / "front.log").start()
    yield process, f"http://{public}"
    process.stop()


def test_with_ingest_down_the_front_answers_503_json_with_retry_after(
        front_alone: tuple[Process, str]) -> None:
    _, url = front_alone
    answer = eventually(lambda: requests.post(f"{url}/v1/webhooks/transactions", json={},
                                              timeout=10), 30)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json()["error"] == "unavailable"


def test_a_public_address_already_taken_stops_the_front_in_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        env = process_env({"HOOKLINE_INGEST_BIND": bind,
                           "HOOKLINE_API_BIND": f"127.0.0.1:{free_port()}"})
        process = Process(["front"], env, tmp_path / "front.log").start()
        assert process.popen is not None
        assert process.popen.wait(30) != 0
    assert f"hookline: invalid setting: cannot listen on {bind}" in process.output()
    assert "Traceback" not in process.output()


def test_deliveries_chunked_or_expecting_100_continue_pass_through_the_front(
        fronted: Front) -> None:
    chunked = webhooks.transaction(f"front-chunked-{uuid.uuid4().hex}")
    answer = requests.post(f"{fronted.ingest_url}/v1/webhooks/transactions",
                           data=iter([chunked.body[:10], chunked.body[10:]]),
                           headers=chunked.headers(CANARIES), timeout=30)
    assert answer.status_code == 202, answer.text

    expecting = webhooks.transaction(f"front-expect-{uuid.uuid4().hex}")
    connection = http.client.HTTPConnection(*address(fronted.ingest_url), timeout=30)
    try:
        connection.request("POST", "/v1/webhooks/transactions", body=expecting.body,
                           headers={**expecting.headers(CANARIES), "Expect": "100-continue"})
        assert connection.getresponse().status == 202
    finally:
        connection.close()


def test_a_body_over_the_limit_is_still_refused_by_ingest_behind_the_front(
        fronted: Front) -> None:
    answer = requests.post(f"{fronted.ingest_url}/v1/webhooks/transactions",
                           data=b'{"x":"' + b"a" * Settings.max_body_bytes + b'"}',
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"
