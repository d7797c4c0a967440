"""The console's defences without a browser: CSRF, session fixation, forged cookies, framing
and script policies, escaping of payloads, and a console secret that fails closed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from hookline.config import SettingsError, load_settings
from tests.console.conftest import VIEWER, Console
from tests.console.seed import SCRIPT, SECRET, XSS_ID
from tests.processes import TOKEN

COOKIE = "hookline_console"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    found = _CSRF.search(page.get_data(as_text=True))
    assert found is not None
    return found.group(1)


def cookie_of(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(COOKIE, path="/console")
    return None if cookie is None else cookie.value


def signed_in(console: Console, token: str = TOKEN) -> FlaskClient:
    client = console.app.test_client()
    answer = client.post("/console/sign-in", data={
        "token": token, "csrf_token": csrf_of(client, "/console/sign-in")})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    return client


def test_a_wrong_token_is_refused_and_the_right_one_opens_the_overview(console: Console) -> None:
    client = console.app.test_client()
    assert client.get("/console/").headers["Location"].endswith("/console/sign-in")
    refused = client.post("/console/sign-in", data={
        "token": TOKEN + "x", "csrf_token": csrf_of(client, "/console/sign-in")})
    assert refused.status_code == 401
    assert client.get("/console/").status_code == 302
    client = signed_in(console)
    overview = client.get("/console/")
    assert overview.status_code == 200
    assert "Alerts that would fire now" in overview.get_data(as_text=True)


def test_a_form_without_or_with_a_wrong_csrf_token_is_refused(console: Console) -> None:
    client = signed_in(console)
    retry = f"/console/outbox/{console.dead_email}/retry"
    assert client.post(retry).status_code == 400
    assert client.post(retry, data={"csrf_token": "forged." + "A" * 40}).status_code == 400
    other = signed_in(console)  # a token of another session is not this one's
    assert client.post(retry, data={"csrf_token": csrf_of(other, "/console/outbox")}
                       ).status_code == 400
    assert client.post("/console/sign-out").status_code == 400
    status = console.db.execute("SELECT status FROM email_outbox WHERE id = %s",
                                (console.dead_email,)).fetchone()
    assert status == ("dead",)


def test_signing_in_needs_the_forms_csrf_token(console: Console) -> None:
    client = console.app.test_client()
    assert client.post("/console/sign-in", data={"token": TOKEN}).status_code == 400
    assert client.get("/console/").status_code == 302


def test_the_session_cookie_is_replaced_at_sign_in(console: Console) -> None:
    client = console.app.test_client()
    token = csrf_of(client, "/console/sign-in")
    before = cookie_of(client)
    assert before is not None  # the anonymous session that holds the form's CSRF token
    client.post("/console/sign-in", data={"token": TOKEN, "csrf_token": token})
    after = cookie_of(client)
    assert after is not None
    assert after != before
    fixed = console.app.test_client()  # whoever planted the first cookie is not signed in
    fixed.set_cookie(COOKIE, before, path="/console")
    assert fixed.get("/console/").status_code == 302


def test_a_forged_or_unsigned_cookie_signs_nobody_in(console: Console) -> None:
    client = signed_in(console)
    genuine = console.app.session_interface.get_signing_serializer(console.app)  # type: ignore[attr-defined]
    state = genuine.loads(cookie_of(client))
    assert "token" in state
    assert TOKEN not in str(state)
    forged = URLSafeTimedSerializer("another-secret-0123456789", salt="cookie-session",
                                    signer_kwargs={"key_derivation": "hmac",
                                                   "digest_method": "sha1"})
    for cookie in (forged.dumps(state), cookie_of(client).rsplit(".", 2)[0], "e30"):
        intruder = console.app.test_client()
        intruder.set_cookie(COOKIE, cookie, path="/console")
        assert intruder.get("/console/transactions").status_code == 302


def test_signing_out_ends_the_session(console: Console) -> None:
    client = signed_in(console)
    out = client.post("/console/sign-out", data={"csrf_token": csrf_of(client, "/console/")})
    assert out.status_code == 303
    assert cookie_of(client) is None
    assert client.get("/console/").status_code == 302


@pytest.mark.parametrize("path", ["/console/sign-in", "/console/", "/console/no-such-page",
                                  f"/console/transactions/{XSS_ID}", "/console/audit"])
def test_every_console_page_forbids_frames_and_inline_script(console: Console,
                                                             path: str) -> None:
    answer = signed_in(console).get(path)
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"


def test_the_session_cookie_is_httponly_strict_and_secure_over_tls(console: Console) -> None:
    plain = console.app.test_client().get("/console/sign-in").headers["Set-Cookie"]
    assert "HttpOnly" in plain
    assert "SameSite=Strict" in plain
    assert "Path=/console" in plain
    assert "Secure" not in plain
    tls = console.app.test_client().get("/console/sign-in", base_url="https://localhost")
    assert "Secure" in tls.headers["Set-Cookie"]
    proxied = console.app.test_client().get("/console/sign-in",
                                            headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in proxied.headers["Set-Cookie"]


def test_a_payload_is_shown_escaped(console: Console) -> None:
    page = signed_in(console).get(f"/console/transactions/{XSS_ID}").get_data(as_text=True)
    assert SCRIPT not in page
    assert "<img src=x>" not in page
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in page
    assert '&#34;amount&#34;: 10.99' in page  # indented, the number as stored


def test_an_emails_preview_is_sandboxed(console: Console) -> None:
    answer = signed_in(console).get(f"/console/outbox/{console.dead_email}/preview")
    assert answer.status_code == 200
    assert "sandbox" in answer.headers["Content-Security-Policy"]
    assert "Ada &lt;b&gt;Lovelace&lt;/b&gt;" in answer.get_data(as_text=True)


def test_a_bad_filter_is_named_not_a_server_error(console: Console) -> None:
    answer = signed_in(console).get("/console/transactions?status=lost&created_after=soon")
    assert answer.status_code == 422
    assert "Must be one of" in answer.get_data(as_text=True)


def test_the_api_still_wants_its_bearer_token(console: Console) -> None:
    client = signed_in(console)  # a console session is no API credential
    assert client.get("/v1/transactions").status_code == 401


@pytest.mark.parametrize(("value", "says"), [
    ("", "is set but blank"), ("short", "at least 16 bytes"),
    ("hookline-dev-0123456789abcdef", "well-known development value"),
    (TOKEN, "is also a token"),
])
def test_a_blank_or_weak_console_secret_stops_the_process(value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings({"HOOKLINE_CONSOLE_SECRET": value, "HOOKLINE_OPERATOR_TOKENS": TOKEN})
    assert load_settings({"HOOKLINE_CONSOLE_SECRET": SECRET}).console_secret == SECRET


def test_the_api_refuses_to_start_with_a_weak_console_secret() -> None:
    done = subprocess.run([sys.executable, "-m", "hookline", "api"], capture_output=True,
                          text=True, timeout=30, check=False,
                          env={**os.environ, "HOOKLINE_CONSOLE_SECRET": "too-short"})
    assert done.returncode != 0
    assert "HOOKLINE_CONSOLE_SECRET must be a random secret of at least 16 bytes" in done.stderr


@pytest.mark.parametrize(("path", "status"), [
    ("/console/transactions?cursor=not-a-cursor", 422),
    ("/console/transactions?limit=0", 422),
    ("/console/events?partition=3", 422),
    ("/console/events?received_after=yesterday", 422),
    ("/console/outbox?status=lost", 422),
    ("/console/bookings?customer_email=" + "x" * 300, 422),
    ("/console/events/0/99999999999999999999", 404),
    ("/console/events/1/1", 404),
    ("/console/transactions/tx-nobody", 404),
    ("/console/transactions/tx-xss-1?source=nowhere", 404),
    ("/console/transactions/a%00b", 404),
    ("/console/bookings/BK-%00", 404),
    ("/console/outbox/999999", 404),
    ("/console/outbox/999999/preview", 404),
    ("/console/outbox/99999999999999999999", 404),
    ("/console/no/such/page", 404),
])
def test_bad_input_is_named_never_a_server_error(console: Console, path: str,
                                                status: int) -> None:
    answer = signed_in(console).get(path)
    assert answer.status_code == status, answer.get_data(as_text=True)[:300]
    assert answer.mimetype == "text/html"


def test_retrying_what_cannot_be_retried_is_refused(console: Console) -> None:
    client = signed_in(console)
    token = csrf_of(client, "/console/outbox")
    assert client.post("/console/outbox/999999/retry",
                       data={"csrf_token": token}).status_code == 404
    sent = console.db.execute(
        "SELECT id FROM email_outbox WHERE status = 'sent' LIMIT 1").fetchone()
    assert sent is not None
    assert client.post(f"/console/outbox/{sent[0]}/retry",
                       data={"csrf_token": token}).status_code == 409


def test_a_viewer_may_look_but_not_act(console: Console) -> None:
    client = signed_in(console, VIEWER)
    dead = client.get("/console/outbox?status=dead")
    assert dead.status_code == 200
    assert "/retry" not in dead.get_data(as_text=True)  # no action offered
    before = console.db.execute("SELECT status FROM email_outbox WHERE id = %s",
                                (console.dead_email,)).fetchone()
    answer = client.post(f"/console/outbox/{console.dead_email}/retry",
                         data={"csrf_token": csrf_of(client, "/console/outbox")})
    assert answer.status_code == 403
    assert "viewer" in answer.get_data(as_text=True)
    assert console.db.execute("SELECT status FROM email_outbox WHERE id = %s",
                              (console.dead_email,)).fetchone() == before
    audited = console.db.execute(
        "SELECT actor, action, targets, outcome FROM operator_audit ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert audited == ("viewer", "outbox.retry", [f"outbox:{console.dead_email}"], "refused")
