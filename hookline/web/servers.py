"""gunicorn applications for the ingress and the operator API."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.http.errors import NoMoreData, ParseException
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.exceptions import BadRequest, ClientDisconnected

from hookline.config import Settings, SettingsError

# Longest a client may leave a request half sent (headers or body) between two reads.
CLIENT_READ_TIMEOUT_SECONDS = 5


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        from hookline.web.http import RequestIdFilter

        self.options = options
        for handler in logging.getLogger().handlers:  # lines about a request name its id
            handler.addFilter(RequestIdFilter())
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)


class BoundedReadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, with every read from a client bounded: one that goes silent mid-request
    (slowloris) frees its thread after CLIENT_READ_TIMEOUT_SECONDS and is closed at once."""

    def init_process(self) -> None:
        timeval = struct.pack("ll", CLIENT_READ_TIMEOUT_SECONDS, 0)
        for listener in self.sockets:  # accepted sockets inherit it; setblocking() keeps it
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self.log.error_log.addFilter(_StalledClients())
        super().init_process()

    def handle(self, conn: Any) -> Any:
        keep = super().handle(conn)
        if keep is False:
            _stop_reading_if_silent(conn.sock)
        return keep


def _stop_reading_if_silent(sock: socket.socket) -> None:
    """gunicorn's close waits up to 2 s, in the worker's main loop, for the client to close
    first; a client that is open and silent would stall every other connection meanwhile."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already gone: nothing to wait for


class _StalledClients(logging.Filter):
    """gunicorn logs a read timeout as an error with a traceback; one line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BlockingIOError):
            record.msg, record.args, record.exc_info = (
                "closed a client silent for %d s mid-request", (CLIENT_READ_TIMEOUT_SECONDS,),
                None)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class BodyErrorsAreBadRequests:
    """WSGI middleware: gunicorn raises its own errors from the body stream (a chunk size that is
    not hex, a chunk without its CRLF), which an app would answer 500 with a traceback; as
    werkzeug's BadRequest they are a 400, and a body cut off is ClientDisconnected (408)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        environ["wsgi.input"] = _Body(environ["wsgi.input"])
        return self.app(environ, start_response)


class _Body:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int | None = None) -> bytes:
        return bytes(self._checked(self._stream.read, size))

    def readline(self, size: int | None = None) -> bytes:
        return bytes(self._checked(self._stream.readline, size))

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self._checked(self._stream.readlines, hint))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    @staticmethod
    def _checked(read: Callable[[Any], Any], size: Any) -> Any:
        try:
            return read(size)
        except NoMoreData:
            raise ClientDisconnected("the body stopped before its end") from None
        except ParseException as exc:
            raise BadRequest(f"the body's framing is malformed: {type(exc).__name__}") from None


class IngestServer(_Server):
    """One publisher per worker process, created after the fork, shared by its threads."""

    def __init__(self, settings: Settings, bind: str, workers: int, threads: int) -> None:
        self.settings = settings
        super().__init__({
            "bind": bind, "workers": workers, "threads": threads,
            "worker_class": BoundedReadWorker,
            "timeout": 30, "graceful_timeout": 10, "keepalive": 5,
            "child_exit": _mark_worker_dead, "proc_name": "hookline-ingest",
            "control_socket_disable": True,
            # each worker listens on a socket of its own and the kernel spreads connections
            # over them; on one shared socket the first worker to wake took most kept-alive
            # connections (32 of 32 in half the benchmark runs), leaving a core idle
            "reuse_port": True,
        })

    def load(self) -> BodyErrorsAreBadRequests:
        from hookline.log.publisher import Publisher
        from hookline.web.ingress import create_app

        publisher = Publisher(self.settings)
        publisher.start()
        publisher.wait_ready(5)
        return BodyErrorsAreBadRequests(create_app(self.settings, publisher))


class ApiServer(_Server):
    def __init__(self, settings: Settings, bind: str, threads: int = 8) -> None:
        self.settings = settings
        super().__init__({"bind": bind, "workers": 1, "threads": threads,
                          "worker_class": BoundedReadWorker, "timeout": 60,
                          # room for every filter at its longest (255 characters) and a cursor
                          "limit_request_line": 8190,
                          "proc_name": "hookline-api", "control_socket_disable": True})

    def load(self) -> BodyErrorsAreBadRequests:
        from sqlalchemy import create_engine

        from hookline.web.api import create_api

        engine = create_engine(self.settings.database_url, pool_pre_ping=True, pool_size=8)
        return BodyErrorsAreBadRequests(create_api(self.settings, engine))


def check_address(bind: str, reuse_port: bool = True) -> None:
    """SettingsError when another program listens on `bind`. Each worker binds a socket of its
    own (SO_REUSEPORT), and one that cannot bind would only be restarted over and over; so the
    address is tried once, here, before any worker starts, as with one shared socket. The front
    binds without SO_REUSEPORT: then even a server sharing its port is another program."""
    host, _, port = bind.rpartition(":")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:  # as the workers bind
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind(address)
    except OSError as exc:
        raise SettingsError(f"cannot listen on {bind}: {exc.strerror or exc}") from None


def _mark_worker_dead(_arbiter: Arbiter, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

