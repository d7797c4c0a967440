"""`hookline up`: every process in the foreground, restarted when it dies, stopped on Ctrl-C."""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from types import FrameType

import orjson

from hookline.config import DEVELOPMENT_MARK, Settings, mask_url

log = logging.getLogger(__name__)
DEV_MAIL_FOLDER = "var/mail"
SAMPLE = {"transaction_id": "tx-demo-1", "source_account": "acct-alice",
          "destination_account": "acct-hotel", "amount": "149.90", "currency": "USD",
          "booking_reference": "BK-DEMO-1"}


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        # a session of its own: Ctrl-C reaches only the supervisor, which stops children in order
        self.process = subprocess.Popen(self.args, env=env, start_new_session=True)
        self.started_at = time.monotonic()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)


def run_pipeline(settings: Settings) -> None:
    env = dict(os.environ)
    token = None  # a configured token is never printed: only one made here for this run
    if not settings.operator_tokens:
        token = DEVELOPMENT_MARK + secrets.token_urlsafe(18)
        env["HOOKLINE_OPERATOR_TOKENS"] = token
    if settings.console_secret is None:  # signs the console's sessions of this run only
        env["HOOKLINE_CONSOLE_SECRET"] = DEVELOPMENT_MARK + secrets.token_urlsafe(32)
    if not settings.transactions_secrets:  # development: unsigned, never trusted
        env["HOOKLINE_TRANSACTIONS_UNSIGNED"] = "allow"
    hookline = [sys.executable, "-m", "hookline"]
    # gunicorn on the internal binds; the front serves the public ones and passes it only
    # whole, well-formed requests (first in the list: the first to stop taking requests)
    children = [Child("front", [*hookline, "front"]),
                Child("ingest", [*hookline, "ingest", "--bind", settings.ingest_internal_bind]),
                Child("api", [*hookline, "api", "--bind", settings.api_internal_bind]),
                Child("projector", [*hookline, "project"]), Child("mailer", [*hookline, "mail"]),
                Child("scheduler", [*hookline, "schedule"])]
    if settings.smtp_url is None:  # development: keep the customers' emails in files
        env["HOOKLINE_SMTP_URL"] = f"smtp://{settings.dev_smtp_bind}"
        children.insert(0, Child("devsmtp", [*hookline, "devsmtp", "--folder", DEV_MAIL_FOLDER]))
    stopping = _install_stop_signals()
    for child in children:
        child.start(env)
    if _wait_until_up(settings, children, stopping):
        print(banner(settings, token), flush=True)
    _supervise(children, env, stopping)


def _install_stop_signals() -> list[bool]:
    stopping = [False]

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping[0] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stopping


def _supervise(children: list[Child], env: dict[str, str], stopping: list[bool]) -> None:
    while not stopping[0]:
        time.sleep(0.2)
        for child in children:
            code = child.process.poll() if child.process else None
            if code is None or stopping[0]:
                continue
            delay = min(30.0, 2.0 ** min(child.restarts, 5)) \
                if time.monotonic() - child.started_at < 30 else 1.0
            child.restarts += 1
            print(f"hookline: {child.name} exited with code {code}; restarting it in "
                  f"{delay:.0f} s (restart #{child.restarts})", file=sys.stderr, flush=True)
            time.sleep(delay)
            if not stopping[0]:
                child.start(env)
    _stop_all(children)


def _stop_all(children: list[Child], grace: float = 15.0) -> None:
    print("hookline: stopping every process…", file=sys.stderr, flush=True)
    for child in children:
        child.stop()
    deadline = time.monotonic() + grace
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"hookline: {child.name} did not stop in time; killing it", file=sys.stderr)
            child.process.kill()
            child.process.wait()
    print("hookline: stopped", file=sys.stderr, flush=True)


def _wait_until_up(settings: Settings, children: list[Child], stopping: list[bool],
                   timeout: float = 60.0) -> bool:
    urls = [f"http://{settings.ingest_bind}/readyz", f"http://{settings.api_bind}/healthz"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping[0]:
        if all(_answers(url) for url in urls):
            return True
        if any(c.process is not None and c.process.poll() is not None for c in children):
            return False
        time.sleep(0.2)
    return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own URL)
            return bool(response.status == 200)
    except OSError:
        return False


def banner(settings: Settings, token: str | None) -> str:
    ingest, api = f"http://{settings.ingest_bind}", f"http://{settings.api_bind}"
    body = orjson.dumps(SAMPLE).decode()
    headers = ["-H 'Content-Type: application/json'"]
    if settings.transactions_secrets:
        from hookline.senders.signatures import sign_standard_webhooks

        msg_id, now = "msg_demo_" + secrets.token_hex(6), int(time.time())
        signature = sign_standard_webhooks(settings.transactions_secrets[0], msg_id, now,
                                           body.encode())
        headers += [f"-H 'webhook-id: {msg_id}'", f"-H 'webhook-timestamp: {now}'",
                    f"-H {shlex.quote('webhook-signature: ' + signature)}"]
    return "\n".join([
        "",
        "hookline is up — Ctrl-C stops every process.",
        f"  webhooks      {ingest}/v1/webhooks/transactions",
        f"  operator API  {api}/v1/transactions/<id>   (OpenAPI: {api}/v1/openapi.json)",
        f"  console       {api}/console/   (sign in with the operator token)",
        f"  metrics       {ingest}/metrics  {api}/metrics  "
        f"http://{settings.projector_metrics_bind}/metrics  "
        f"http://{settings.mailer_metrics_bind}/metrics  "
        f"http://{settings.scheduler_metrics_bind}/metrics",
        "  emails        " + (mask_url(settings.smtp_url) if settings.smtp_url
                               else f"kept as .eml files in {DEV_MAIL_FOLDER}/"),
        f"  operator token (made for this run): {token}" if token else
        "  operator token: one of HOOKLINE_OPERATOR_TOKENS (not shown)",
        "",
        "Post a sample webhook:",
        f"  curl -i -X POST {ingest}/v1/webhooks/transactions "
        + " ".join(headers) + f" -d {shlex.quote(body)}",
        "Then read it back:",
        f"  curl -s -H 'Authorization: Bearer {token or '<your operator token>'}' "
        f"{api}/v1/transactions/tx-demo-1",
        "",
    ])
