"""/metrics of the ingress (across gunicorn workers) and of the projector: right and lint-clean."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import UNSIGNED_TRANSACTIONS, Pipeline, eventually, running_pipeline

POSTS = 40


def scrape(url: str) -> str:
    # a fresh connection each time, so that any worker may answer
    answer = requests.get(f"{url}/metrics", timeout=10, headers={"Connection": "close"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return answer.text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def names(text: str) -> set[str]:
    return {name for name, _ in samples(text)}


def promtool_is_clean(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: install Debian's 'prometheus' package "
                    "(apt-get install --no-install-recommends prometheus) to lint /metrics")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def post(url: str, n: int) -> int:
    body = {"transaction_id": f"tx-m-{n}", "source_account": "acct-a",
            "destination_account": "acct-b", "amount": f"{n}.10", "currency": "EUR"}
    answer = requests.post(f"{url}/v1/webhooks/transactions", data=orjson.dumps(body),
                           headers={"Content-Type": "application/json", "Connection": "close"},
                           timeout=30)
    return answer.status_code


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    path = tmp_path / "multiproc"
    path.mkdir()
    return path


@pytest.fixture
def posted(env: dict[str, str], tmp_path: Path, metrics_dir: Path) -> Iterator[Pipeline]:
    """ingest (2 workers) and projector, after POSTS accepted deliveries and one refusal."""
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **UNSIGNED_TRANSACTIONS}
    with running_pipeline(env, tmp_path, parts=("ingest", "projector")) as running:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda n: post(running.ingest_url, n), range(POSTS)))
        assert statuses == [202] * POSTS
        refused = requests.post(f"{running.ingest_url}/v1/webhooks/transactions", data=b"{",
                                headers={"Content-Type": "application/json"}, timeout=10)
        assert refused.status_code == 422
        yield running


def test_ingest_counts_are_the_same_whichever_worker_answers(posted: Pipeline,
                                                            metrics_dir: Path) -> None:
    workers_that_counted = {p.name.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
    assert len(workers_that_counted) >= 2, "the posts did not reach both workers"
    for _ in range(12):
        text = scrape(posted.ingest_url)
        assert value(text, "hookline_webhooks_received_total",
                     source="transactions", outcome="accepted") == POSTS
        assert value(text, "hookline_webhooks_received_total",
                     source="transactions", outcome="invalid_payload") == 1
        assert value(text, "hookline_ingest_request_seconds_count") == POSTS + 1
        assert value(text, "hookline_publish_seconds_count") == POSTS


def test_ingest_exposes_every_required_series_and_promtool_is_clean(posted: Pipeline) -> None:
    text = scrape(posted.ingest_url)
    assert {"hookline_webhooks_received_total", "hookline_ingest_request_seconds_bucket",
            "hookline_ingest_request_seconds_sum", "hookline_publish_seconds_bucket",
            "hookline_publish_inflight"} <= names(text)
    assert value(text, "hookline_publish_inflight") == 0
    assert value(text, "hookline_ingest_request_seconds_bucket", le="+Inf") == POSTS + 1
    promtool_is_clean(text)


def test_projector_metrics_show_what_was_projected(posted: Pipeline) -> None:
    url = f"http://{posted.env['HOOKLINE_PROJECTOR_METRICS_BIND']}"

    def caught_up() -> str:
        text = scrape(url)
        assert value(text, "hookline_events_projected_total", outcome="applied") == POSTS
        assert value(text, "hookline_consumer_offset", consumer="projector") == POSTS - 1
        assert value(text, "hookline_consumer_lag", consumer="projector") == 0
        return text

    text = eventually(caught_up, timeout=30, interval=0.5)
    batches = value(text, "hookline_batch_seconds_count")
    assert batches is not None
    assert 1 <= batches <= POSTS
    promtool_is_clean(text)
