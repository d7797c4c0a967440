"""`hookline front`: HAProxy before ingest and the operator API. It holds every client's request
until it has arrived whole (headers and body, within REQUEST_DEADLINE_SECONDS), refuses broken
framing, and only then passes it to gunicorn: slow or malformed clients never hold a thread."""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import FrameType

from hookline.config import Settings, SettingsError

log = logging.getLogger(__name__)
REQUEST_DEADLINE_SECONDS = 10  # a whole request, headers and body; senders need well under 1 s
CLIENT_IDLE_SECONDS = 30  # a client silent that long while its answer is being sent is closed
KEEPALIVE_SECONDS = 5  # between two requests on one connection, as gunicorn's keepalive
SERVER_SECONDS = 60  # the API's slowest query; ingest answers within HOOKLINE_PUBLISH_TIMEOUT
QUEUE_SECONDS = 10  # a whole request waiting that long for gunicorn is answered 503
MAX_CONNECTIONS = {"ingest": 3000, "api": 1000}  # each an event-driven socket, a few KiB idle
HEADERS_ROOM = 16 * 1024  # a buffer holds the headers and the largest body ingest accepts
STOP_GRACE_SECONDS = 15  # requests in flight finish after a stop, then it is forced
DNS_REPLICAS = 8  # servers a DNS name may resolve to (compose: ingest replicas)
_PR_SET_PDEATHSIG = 1

_ERRORS = {
    408: ("request_timeout", "the request did not arrive in full in time"),
    502: ("bad_gateway", "the server behind the front failed to answer"),
    503: ("unavailable", "the server behind the front is unavailable; retry later"),
    504: ("gateway_timeout", "the server behind the front did not answer in time"),
}


def haproxy_config(settings: Settings) -> str:
    """HAProxy's configuration: two public binds, each before its gunicorn server."""
    sections = [_global(settings), _defaults()]
    if any(_is_dns_name(bind) for bind in (settings.ingest_internal_bind,
                                           settings.api_internal_bind)):
        sections.append("resolvers system\n    parse-resolv-conf\n    hold valid 10s\n")
    for name, public, internal in (("ingest", settings.ingest_bind, settings.ingest_internal_bind),
                                   ("api", settings.api_bind, settings.api_internal_bind)):
        sections.append(_proxy(name, public, internal))
    return "\n".join(sections)


def _global(settings: Settings) -> str:
    return "\n".join([
        "global",
        f"    maxconn {sum(MAX_CONNECTIONS.values())}",
        # whole bodies are buffered before gunicorn sees them: up to the largest accepted
        f"    tune.bufsize {settings.max_body_bytes + HEADERS_ROOM}",
        "    noreuseport",  # a second program on the public address is an error, not a share
        f"    hard-stop-after {STOP_GRACE_SECONDS}s",
        "    log stderr format raw local0 info",
        "",
    ])


def _defaults() -> str:
    lines = [
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    option dontlog-normal",  # one line per refused, cut off or failed request only
        "    option http-buffer-request",
        "    option http-server-close",  # a fresh connection each: never one gunicorn is closing
        f"    timeout http-request {REQUEST_DEADLINE_SECONDS}s",
        f"    timeout http-keep-alive {KEEPALIVE_SECONDS}s",
        f"    timeout client {CLIENT_IDLE_SECONDS}s",
        "    timeout connect 5s",
        f"    timeout server {SERVER_SECONDS}s",
        f"    timeout queue {QUEUE_SECONDS}s",
    ]
    for status, (error, detail) in _ERRORS.items():
        retry = " hdr Retry-After 5" if status == 503 else ""
        lines.append(f"    http-error status {status} content-type application/json "
                     f"string '{{\"error\":\"{error}\",\"detail\":\"{detail}\"}}'{retry}")
    return "\n".join([*lines, ""])


def _proxy(name: str, public: str, internal: str) -> str:
    host, _, port = internal.rpartition(":")
    if _is_dns_name(internal):  # looked up again as it changes: containers come and go
        server = (f"    server-template {name} 1-{DNS_REPLICAS} {host}:{port} "
                  "resolvers system init-addr none")
    else:
        server = f"    server {name} {internal}"
    return "\n".join([
        f"frontend {name}",
        f"    bind {public}",
        f"    maxconn {MAX_CONNECTIONS[name]}",
        f"    default_backend {name}",
        "",
        f"backend {name}",
        server,
        "",
    ])


def _is_dns_name(bind: str) -> bool:
    host = bind.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def haproxy_program() -> str:
    # Debian installs it in /usr/sbin, which a user's PATH often leaves out
    searched = f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin"
    haproxy = shutil.which("haproxy", path=searched)
    if haproxy is None:
        raise SettingsError("`hookline front` runs HAProxy, which is not installed "
                            "(Debian: apt-get install haproxy)")
    return haproxy


def serve(settings: Settings) -> int:
    """Run HAProxy until it stops; a stop signal lets the requests in flight finish first."""
    haproxy = haproxy_program()
    with tempfile.TemporaryDirectory(prefix="hookline-front-") as folder:
        config = Path(folder) / "haproxy.cfg"
        config.write_text(haproxy_config(settings))
        child = subprocess.Popen([haproxy, "-db", "-f", str(config)],
                                 preexec_fn=_die_with_parent)

        def soft_stop(_signum: int, _frame: FrameType | None) -> None:
            child.send_signal(signal.SIGUSR1)  # HAProxy's graceful stop

        signal.signal(signal.SIGTERM, soft_stop)
        signal.signal(signal.SIGINT, soft_stop)
        log.info("front: webhooks on %s → %s, operator API on %s → %s", settings.ingest_bind,
                 settings.ingest_internal_bind, settings.api_bind, settings.api_internal_bind)
        return child.wait()


def _die_with_parent() -> None:
    """HAProxy stops when this process dies, however it dies: never an orphan on the port."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
