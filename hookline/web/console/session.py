"""Who is signed in to the console: a signed session cookie naming an operator token by a keyed
fingerprint (never the token itself: the cookie is signed, not encrypted), and the headers that
keep every console page out of frames and scripts."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from flask import Flask, Response, g, request, session
from flask.sessions import SecureCookieSessionInterface

from hookline.config import OperatorToken

PREFIX = "/console"
LIFETIME = timedelta(hours=8)  # a session older than a working day signs in again
COOKIE = "hookline_console"
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# an email's own HTML: no script, no fetch, its own opaque origin, framed only by the console
PREVIEW_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; "
                  "frame-ancestors 'self'")


class Tokens:
    """The operator tokens as the console knows them: by a fingerprint keyed with its secret."""

    def __init__(self, secret: str, tokens: Sequence[OperatorToken]) -> None:
        self._secret = secret.encode()
        self._known = [(self._print(token.token), token) for token in tokens]

    def _print(self, token: str) -> str:
        return hmac.new(self._secret, b"console:" + token.encode(), hashlib.sha256).hexdigest()

    def given(self, token: str) -> tuple[str, OperatorToken] | None:
        """The fingerprint and operator of a token typed at sign-in, if it is one."""
        fingerprint = self._print(token.strip())
        found = self.of(fingerprint)
        return None if found is None else (fingerprint, found)

    def of(self, fingerprint: Any) -> OperatorToken | None:
        """The operator whose token has this fingerprint; every one compared, in equal time."""
        if not isinstance(fingerprint, str):
            return None
        found = None
        for known, operator in self._known:
            if hmac.compare_digest(fingerprint.encode(), known.encode()):
                found = operator
        return found


def sign_in(fingerprint: str) -> None:
    """A new session (a fresh random id, a fresh CSRF token): one set before is never kept."""
    session.clear()
    session.permanent = True
    session["sid"] = secrets.token_urlsafe(24)
    session["token"] = fingerprint


def sign_out() -> None:
    session.clear()  # an emptied session's cookie is deleted


def signed_in(tokens: Tokens) -> OperatorToken | None:
    return tokens.of(session.get("token"))


class _Sessions(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured so, and whenever the request came over TLS."""
        forwarded = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure or forwarded


def configure(app: Flask, secret: str) -> None:
    app.secret_key = secret
    app.session_interface = _Sessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_PATH=PREFIX, SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=LIFETIME,
        # CSRF is checked by the console's own routes; the API's are bearer-token only
        WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=int(LIFETIME.total_seconds()),
    )
    app.after_request(_protect)


def _protect(response: Response) -> Response:
    """Every console answer, errors too: no frames, no inline script, no sniffing, no cache."""
    if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
        return response
    preview = bool(g.get("email_preview"))
    response.headers["Content-Security-Policy"] = PREVIEW_POLICY if preview else POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN" if preview else "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"  # CSRF checks the referrer over TLS
    response.headers["Cache-Control"] = "no-store"
    return response
