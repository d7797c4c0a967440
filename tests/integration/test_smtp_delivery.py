"""HOOKLINE_SMTP_URL forms against a real SMTP server: STARTTLS, implicit TLS, login."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from hookline.mail.mailer import SmtpServer, _tls
from tests.mailbox import Mailbox
from tests.processes import free_port

USER, PASSWORD = "mailer", "p@ss:word/1"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture(autouse=True)
def fresh_trust_store() -> Iterator[None]:
    """The mailer reads the trust store once per process; these tests change it per test."""
    _tls.cache_clear()
    yield
    _tls.cache_clear()


@pytest.fixture
def trusted(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The server's context; the client trusts its certificate as it would a real CA's."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def only_our_user(_server: Any, _session: Any, _envelope: Any, _mechanism: str,
                  data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # a failure is answered 535


@contextmanager
def serving(**options: Any) -> Iterator[Mailbox]:
    box = Mailbox(free_port(), options=options).start()
    try:
        yield box
    finally:
        box.stop()


def message() -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@example.com", "b@example.com", "TLS"
    mail.set_content("hello")
    return mail


def send(url: str) -> None:
    smtp = SmtpServer.from_url(url).connect()
    try:
        smtp.send_message(message())
    finally:
        smtp.quit()


def test_starttls_then_login_with_a_percent_encoded_password_delivers(
        trusted: ssl.SSLContext) -> None:
    # the server allows login only once TLS is up: a delivery proves both happened
    with serving(tls_context=trusted, require_starttls=True, authenticator=only_our_user,
                 auth_required=True) as box:
        send(f"smtp://{USER}:p%40ss%3Aword%2F1@127.0.0.1:{box.port}?starttls=true")
        assert [m["Subject"] for m in box.received()] == ["TLS"]


def test_a_wrong_password_is_refused(trusted: ssl.SSLContext) -> None:
    with serving(tls_context=trusted, authenticator=only_our_user, auth_required=True) as box:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            send(f"smtp://{USER}:wrong@127.0.0.1:{box.port}?starttls=true")
        assert box.received() == []


def test_smtps_speaks_tls_from_the_first_byte(trusted: ssl.SSLContext) -> None:
    with serving(ssl_context=trusted) as box:
        send(f"smtps://127.0.0.1:{box.port}")
        assert len(box.received()) == 1


def test_a_server_with_an_untrusted_certificate_is_refused(
        certificate: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    with serving(ssl_context=context) as box, pytest.raises(ssl.SSLCertVerificationError):
        send(f"smtps://127.0.0.1:{box.port}")


def test_url_defaults() -> None:
    plain = SmtpServer.from_url("smtp://mail.example.com")
    assert (plain.port, plain.starttls, plain.implicit_tls, plain.username) == (
        25, False, False, None)
    implicit = SmtpServer.from_url("smtps://u@mail.example.com?starttls=true")
    assert (implicit.port, implicit.starttls, implicit.implicit_tls, implicit.username) == (
        465, False, True, "u")
