"""Secrets and tokens never show in logs, error bodies or metrics, whatever error path is taken;
every response carries an X-Request-ID, and every log line about a request names it."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import requests

from tests.abuse.conftest import CANARIES, TOKEN
from tests.chaos import webhooks
from tests.chaos.webhooks import FORGER, Delivery
from tests.conftest import AMQP_URL, copy_database, delete_streams, drop_database, new_stream
from tests.mailbox import Mailbox
from tests.operator_seed import seed
from tests.processes import Pipeline, eventually, free_port, process_env, running_pipeline

DB_PASSWORD = "CANARYdbPASSWORD42"  # trust authentication ignores it; a leak would show it
SMTP_PASSWORD = "CANARYsmtpPASSWORD42"
SECRETS = [CANARIES.transactions, CANARIES.stripe, CANARIES.chapa, CANARIES.bookings, TOKEN,
           DB_PASSWORD, SMTP_PASSWORD, ":guest@"]  # the last: the broker's password unmasked
SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_BODY = 4096


@dataclass
class Exposed:
    """ingest (every publish times out: the 503 path), api and mailer, with recognisable
    secrets; every answer they gave, and everything else they printed."""

    pipeline: Pipeline
    database: str
    url: str
    answers: list[requests.Response] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)

    def ingest(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._keep(self.pipeline.http.request(
            method, f"{self.pipeline.ingest_url}{path}", timeout=30, **kwargs))

    def api(self, method: str, path: str, token: str | None = TOKEN,
            headers: dict[str, str] | None = None) -> requests.Response:
        sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        return self._keep(self.pipeline.http.request(
            method, f"{self.pipeline.api_url}{path}", headers=sent, timeout=30))

    def post(self, delivery: Delivery, headers: dict[str, str],
             request_id: str | None = None) -> requests.Response:
        extra = {"X-Request-ID": request_id} if request_id else {}
        return self.ingest("POST", f"/v1/webhooks/{delivery.source}", data=delivery.body,
                           headers={**headers, **extra})

    def _keep(self, answer: requests.Response) -> requests.Response:
        self.answers.append(answer)
        return answer


@pytest.fixture(scope="module")
def exposed(template_database: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Exposed]:
    name, stream = copy_database(template_database), new_stream()
    url = f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:5432/{name}"
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        seed(conn, transactions=10, bookings=10, events=10, emails=30, references=5)
    mailbox = Mailbox(free_port()).start()
    env = {"HOOKLINE_DATABASE_URL": url, "HOOKLINE_AMQP_URL": AMQP_URL, "HOOKLINE_STREAM": stream,
           "HOOKLINE_OPERATOR_TOKENS": TOKEN, "HOOKLINE_PUBLISH_TIMEOUT": "0.000001",
           "HOOKLINE_MAX_BODY_BYTES": str(MAX_BODY),
           "HOOKLINE_SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{mailbox.port}",
           **CANARIES.env()}
    try:
        with running_pipeline(env, tmp_path_factory.mktemp("exposed"),
                              parts=("ingest", "api")) as pipeline:
            pipeline.start_mailer()
            yield Exposed(pipeline, name, url)
    finally:
        mailbox.stop()
        delete_streams(stream)
        drop_database(name)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def every_source() -> list[Delivery]:
    key = uuid.uuid4().hex[:8]
    return [webhooks.transaction(f"exp-{key}"), webhooks.stripe(f"exp-{key}"),
            webhooks.chapa(f"exp-{key}"), webhooks.booking(f"BK-exp-{key}", "e@example.com")]


def drive_ingest_errors(exposed: Exposed) -> None:
    for delivery in every_source():
        exposed.post(delivery, delivery.headers(CANARIES))  # 503: no confirm in time
        exposed.post(delivery, webhooks.signed(delivery.source, FORGER, delivery.body, "m"))
        exposed.post(delivery, delivery.headers(CANARIES, at=1_000_000_000))  # stale
        for junk in ("t=1,v1=zz", "v1,!!!", "x" * 300, ""):
            exposed.post(delivery, {"Content-Type": "application/json", "Stripe-Signature": junk,
                                    "webhook-id": junk or "m", "webhook-timestamp": junk,
                                    "webhook-signature": junk, "x-chapa-signature": junk})
        signed_junk = webhooks.signed(delivery.source, CANARIES, b"{not json", "m")
        exposed.ingest("POST", f"/v1/webhooks/{delivery.source}", data=b"{not json",
                       headers=signed_junk)
        exposed.ingest("POST", f"/v1/webhooks/{delivery.source}", data=b"x" * (MAX_BODY + 10),
                       headers=delivery.headers(CANARIES))
        exposed.ingest("POST", f"/v1/webhooks/{delivery.source}", data=delivery.body,
                       headers={"Content-Type": "text/plain"})
        exposed.ingest("GET", f"/v1/webhooks/{delivery.source}")
    for path in ("/", "/healthz", "/readyz", "/metrics", "/nowhere", "/v1/webhooks/nobody"):
        exposed.ingest("GET", path)
    exposed.ingest("POST", "/v1/webhooks/nobody", json={})


def outbox_row(exposed: Exposed, status: str) -> int:
    with psycopg.connect(_plain(exposed.url), autocommit=True) as conn:
        row = conn.execute("SELECT min(id) FROM email_outbox WHERE status = %s",
                           (status,)).fetchone()
    assert row is not None
    assert row[0] is not None, f"no {status} email seeded"
    return int(row[0])


def drive_api_errors(exposed: Exposed) -> None:
    for token in (None, "wrong", TOKEN[:-1], TOKEN.upper()):
        exposed.api("GET", "/v1/transactions", token=token)
        exposed.api("POST", "/v1/outbox/1/retry", token=token)
    for path in ("/v1/transactions?status=bogus", "/v1/transactions?cursor=!!",
                 "/v1/transactions/nope", "/v1/bookings/nope", "/v1/events/99999",
                 "/v1/events?limit=0", "/v1/outbox?template=x", "/v1/status",
                 "/v1/openapi.json", "/v1/nowhere", "/metrics", "/healthz", "/readyz"):
        exposed.api("GET", path)
    exposed.api("DELETE", "/v1/transactions")
    exposed.api("POST", f"/v1/outbox/{outbox_row(exposed, 'sent')}/retry")  # 409


def cli(exposed: Exposed, *args: str, **env: str) -> str:
    """A `hookline` command that fails on a bad setting; what it printed."""
    done = subprocess.run([sys.executable, "-m", "hookline", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env=process_env({"HOOKLINE_AMQP_URL": AMQP_URL,
                                           "HOOKLINE_DATABASE_URL": exposed.url, **env}))
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def drive_startup_errors(exposed: Exposed) -> None:
    """Commands refused at start, each naming a setting that holds a secret (run at once)."""
    unreachable = f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:{free_port()}/x"
    runs = {"HOOKLINE_SMTP_URL must be": ("mail", {
                "HOOKLINE_SMTP_URL": f"ftp://mailer:{SMTP_PASSWORD}@h"}),
            "is not valid base64": ("ingest", {"HOOKLINE_BOOKINGS_SECRETS": f"whsec_{TOKEN}!"}),
            "cannot reach PostgreSQL": ("api", {"HOOKLINE_DATABASE_URL": unreachable}),
            "cannot reach RabbitMQ": ("project", {
                "HOOKLINE_AMQP_URL": f"amqp://guest:{DB_PASSWORD}@127.0.0.1:{free_port()}/"})}
    with ThreadPoolExecutor(len(runs)) as pool:
        printed = dict(zip(runs, pool.map(lambda run: cli(exposed, run[0], **run[1]),
                                          runs.values()), strict=True))
    for sentence, text in printed.items():
        assert sentence in text, text
    exposed.printed += printed.values()


def drop_exposed_database(exposed: Exposed) -> None:
    drop_database(exposed.database)


def test_every_response_carries_a_request_id_and_a_sane_one_is_taken_from_the_caller(
        exposed: Exposed) -> None:
    given = {"trace-1.a_B": "trace-1.a_B", "x" * 128: "x" * 128}
    refused = ["x" * 129, "a b", "<script>", "caf\u00e9", "a/b", "", "id;drop"]
    for server in (exposed.ingest, exposed.api):
        for request_id, expected in given.items():
            answer = server("GET", "/healthz", headers={"X-Request-ID": request_id})
            assert answer.headers["X-Request-ID"] == expected
        made = [server("GET", "/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
                for bad in refused]
        assert all(re.fullmatch(r"[0-9a-f]{32}", made_id) for made_id in made), made
        assert len(set(made)) == len(made), "generated ids repeat"
    drive_ingest_errors(exposed)
    drive_api_errors(exposed)
    statuses = {answer.status_code for answer in exposed.answers}
    assert statuses >= {200, 401, 404, 405, 409, 413, 415, 503}, statuses
    missing = [(a.status_code, a.url) for a in exposed.answers
               if not SANE_ID.fullmatch(a.headers.get("X-Request-ID", ""))]
    assert missing == []


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_log_lines_about_a_request_name_its_request_id(exposed: Exposed) -> None:
    delivery = every_source()[0]
    answer = exposed.post(delivery, delivery.headers(CANARIES), request_id="trace-ingest-503")
    assert answer.status_code == 503
    exposed.api("POST", f"/v1/outbox/{outbox_row(exposed, 'dead')}/retry",
                headers={"X-Request-ID": "trace-api-retry"})

    def logged() -> None:
        ingest = exposed.pipeline.processes["ingest"].output()
        api = exposed.pipeline.processes["api"].output()
        assert any("request_id=trace-ingest-503" in line
                   for line in lines_with(ingest, "not accepted, log unavailable"))
        assert any("request_id=trace-api-retry" in line for line in lines_with(api, "again"))
    eventually(logged, timeout=10)
    ingest = exposed.pipeline.processes["ingest"].output()
    about_requests = lines_with(ingest, "not accepted") + lines_with(
        exposed.pipeline.processes["api"].output(), "pending again")
    assert all(re.search(r" request_id=[A-Za-z0-9._-]+$", line) for line in about_requests)


def test_no_secret_or_token_appears_in_any_log_error_body_header_or_metric(
        exposed: Exposed) -> None:
    drive_ingest_errors(exposed)
    drive_api_errors(exposed)
    drive_startup_errors(exposed)
    drop_exposed_database(exposed)  # the last error path: every database read fails from here on
    down = exposed.api("GET", "/v1/transactions", headers={"X-Request-ID": "trace-api-503"})
    assert down.status_code == 503

    def api_logged() -> None:
        api = exposed.pipeline.processes["api"].output()
        assert any("request_id=trace-api-503" in line
                   for line in lines_with(api, "database unavailable"))
    eventually(api_logged, timeout=10)
    exposed.ingest("GET", "/metrics")
    exposed.api("GET", "/metrics")
    eventually(lambda: _mailer_failed(exposed), timeout=30)

    texts = [*exposed.printed,
             *(p.output() for p in exposed.pipeline.processes.values()),
             *(a.text for a in exposed.answers),
             *(str(dict(a.headers)) for a in exposed.answers)]
    leaks = {secret: [t[max(0, t.find(secret) - 80):t.find(secret) + 40] for t in texts
                      if secret in t][:3] for secret in SECRETS}
    assert {secret: found for secret, found in leaks.items() if found} == {}
    assert len(exposed.answers) > 100


def _mailer_failed(exposed: Exposed) -> None:
    mailer = exposed.pipeline.processes["mailer"].output()
    assert "failed" in mailer or "Retrying" in mailer, "the mailer met no error yet"
