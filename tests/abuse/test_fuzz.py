"""Whatever arrives at a webhook endpoint (any headers, bytes, encodings, nesting, duplicate
keys, signed or not), ingest answers it without a 5xx, no worker dies, memory stays bounded;
raw requests with broken framing or header bytes get no 5xx from ingest, the API or the front
before them, and leave no traceback in their logs."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.abuse.conftest import (
    CANARIES,
    TOKEN,
    Front,
    Hostile,
    address,
    answers_200,
    rss_bytes,
)
from tests.chaos import webhooks
from tests.chaos.harness import workers
from tests.chaos.webhooks import FORGER

EXAMPLES = 250  # per endpoint
RSS_GROWTH_LIMIT = 64 * 1024 * 1024  # per worker, over a whole endpoint's fuzzing
LIMIT = 256 * 1024  # HOOKLINE_MAX_BODY_BYTES, the default
BASES = {
    "transactions": webhooks.transaction("fuzz-1", "10.00", "BK-1", "succeeded"),
    "stripe": webhooks.stripe("fuzz-1"),
    "chapa": webhooks.chapa("fuzz-1"),
    "bookings": webhooks.booking("BK-fuzz-1", "fuzz@example.com"),
}

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=40) | st.decimals(allow_nan=False).map(str))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=16)


def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """The source's valid body with one field (or one of its object's fields) changed."""
    original = orjson.loads(base)

    def change(path: list[str], value: Any, drop: bool) -> bytes:
        payload = copy.deepcopy(original)
        target = payload if len(path) == 1 else payload[path[0]]
        if drop:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
        return json.dumps(payload).encode()  # integers of any size; Infinity too

    paths = [[key] for key in original] + [[key, inner] for key, value in original.items()
                                          if isinstance(value, dict) for inner in value]
    return st.builds(change, st.sampled_from(paths), json_values, st.booleans())


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _encoded(base: bytes, encoding: str) -> bytes:
    text = base.decode().replace('"', '"\u00e9', 1)  # a character each encoding spells apart
    return text.encode(encoding)


def bodies(base: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        _mutated(base),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=512),
        st.builds(_nested, st.integers(1, 120_000), st.sampled_from(["array", "object"])),
        st.integers(LIMIT - 64, LIMIT + 4096).map(lambda n: b'{"x":"' + b"a" * n + b'"}'),
        st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig"]).map(
            lambda enc: _encoded(base, enc)),
        st.just(base.replace(b'"', b'"\xff\xfe', 1)),  # invalid UTF-8 in a string
        st.just(base[:-1] + b',"' + base[2:]),  # every key twice, the last one wins or not
        st.just(base.replace(b"{", b'{"id":"dup","id":"dup2",', 1)),
        st.just(base.replace(b":", b':1e99999,"x":', 1)),
    )


TYPES = ["application/json", "application/json; charset=utf-8",
         "application/json; charset=utf-16", "APPLICATION/JSON", "application/vnd.hookline+json",
         "text/plain", "", "application/json;;", "multipart/form-data; boundary=x",
         "application/x-www-form-urlencoded"]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=200).map(str.strip)


def headers(source: str) -> st.SearchStrategy[tuple[str, dict[str, str]]]:
    """(how the body is signed, extra headers): validly, with a wrong secret, stale, or junk."""
    junk = st.dictionaries(st.sampled_from([
        "Stripe-Signature", "x-chapa-signature", "chapa-signature", "webhook-id",
        "webhook-timestamp", "webhook-signature", "Content-Encoding", "Transfer-Encoding-X",
        "X-Request-ID", "Accept", "X-Anything"]), header_text, max_size=4)
    return st.tuples(st.sampled_from(["valid", "valid", "forged", "stale", "none"]), junk)


def signed_headers(source: str, body: bytes, how: str) -> dict[str, str]:
    if how == "none":
        return {}
    delivery = BASES[source]
    at = int(time.time()) - (3600 if how == "stale" else 0)
    return webhooks.signed(source, FORGER if how == "forged" else CANARIES, body,
                           delivery.msg_id, at)


def master_events(output: str) -> list[str]:
    """What gunicorn's master said about its workers dying."""
    return [line for line in output.splitlines()
            if "Worker (pid:" in line or "WORKER TIMEOUT" in line]


@pytest.mark.parametrize("source", list(BASES))
def test_fuzzed_deliveries_never_get_a_5xx_nor_kill_or_bloat_a_worker(
        hostile: Hostile, source: str) -> None:
    ingest = hostile.pipeline.processes["ingest"]
    assert ingest.popen is not None
    pids = workers(ingest.popen.pid)
    hostile.post(BASES[source])  # warm: imports and caches are not growth
    memory = {pid: rss_bytes(pid) for pid in pids}
    url = f"{hostile.pipeline.ingest_url}/v1/webhooks/{source}"
    content_types = st.sampled_from(TYPES)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies(BASES[source].body), signing=headers(source), kind=content_types)
    def never_5xx(body: bytes, signing: tuple[str, dict[str, str]], kind: str) -> None:
        how, extra = signing
        sent = {"Content-Type": kind, **signed_headers(source, body, how), **extra}
        if len(body) > LIMIT:  # refused unread: the connection is not reused (see below)
            sent["Connection"] = "close"
        try:
            answer = hostile.pipeline.http.post(url, data=body, headers=sent, timeout=30)
        except requests.ConnectionError:
            # over the limit, ingest answers 413 without reading the body and closes the
            # connection (it could not serve another request); the client may see the close
            # before the answer
            assert len(body) > LIMIT, "the connection failed on a body within the limit"
            return
        assert answer.status_code < 500, f"{answer.status_code} {answer.text[:300]}"

    never_5xx()

    assert workers(ingest.popen.pid) == pids, "a worker was replaced"
    assert master_events(ingest.output()) == []
    grown = {pid: rss_bytes(pid) - memory[pid] for pid in pids}
    assert max(grown.values()) < RSS_GROWTH_LIMIT, f"worker memory grew by {grown}"


# --- raw requests: broken framing and header bytes, which no HTTP client library sends ----------

def _request(path: str, *lines: bytes, body: bytes = b"{}", length: bool = True) -> bytes:
    head = [f"POST {path} HTTP/1.1".encode(), b"Host: hookline", b"Connection: close",
            b"Content-Type: application/json", f"Authorization: Bearer {TOKEN}".encode(), *lines]
    if length:
        head.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _chunked(path: str, body: bytes) -> bytes:
    return _request(path, b"Transfer-Encoding: chunked", body=body, length=False)


# name: (request for a path, whether the client then stops sending: a truncated request)
RAW: dict[str, tuple[Callable[[str], bytes], bool]] = {
    "chunk size zz": (lambda p: _chunked(p, b"zz\r\nab\r\n0\r\n\r\n"), False),
    "chunk size -2": (lambda p: _chunked(p, b"-2\r\nab\r\n0\r\n\r\n"), False),
    "chunk size 0x2": (lambda p: _chunked(p, b"0x2\r\nab\r\n0\r\n\r\n"), False),
    "chunk size huge": (lambda p: _chunked(p, b"9" * 40 + b"\r\nab\r\n0\r\n\r\n"), True),
    "chunk size beyond the body limit": (lambda p: _chunked(p, b"7fffffff\r\nab"), True),
    "chunk data without its CRLF": (lambda p: _chunked(p, b"2\r\nab0\r\n\r\n"), False),
    "chunk size line without its CRLF": (lambda p: _chunked(p, b"2"), True),
    "last chunk without the final CRLF": (lambda p: _chunked(p, b"2\r\nab\r\n0\r\n"), True),
    "chunk extension with a NUL": (lambda p: _chunked(p, b"2;a=\x00\r\nab\r\n0\r\n\r\n"), False),
    "truncated body": (lambda p: _request(p, body=b'{"transaction_id":', length=False)
                       .replace(b"\r\n\r\n", b"\r\nContent-Length: 400\r\n\r\n", 1), True),
    "truncated chunked body": (lambda p: _chunked(p, b"40\r\n{\"transaction_id\":"), True),
    "Content-Length and chunked": (lambda p: _request(p, b"Transfer-Encoding: chunked",
                                                      body=b"2\r\n{}\r\n0\r\n\r\n"), False),
    "two Content-Lengths": (lambda p: _request(p, b"Content-Length: 7"), False),
    "Content-Length not a number": (lambda p: _request(p, b"Content-Length: 2x",
                                                       length=False), False),
    "NUL in a header value": (lambda p: _request(p, b"X-Note: a\x00b"), False),
    "CR in a header value": (lambda p: _request(p, b"X-Note: a\rInjected: b"), False),
    "LF in a header value": (lambda p: _request(p, b"X-Note: a\nInjected: b"), False),
    "non-ASCII header value": (lambda p: _request(p, b"X-Note: caf\xc3\xa9 \xff"), False),
    "non-ASCII header name": (lambda p: _request(p, b"X-N\xf6te: a"), False),
    "NUL in the path": (lambda p: _request(p.replace("/v1", "/v\x001")), False),
    "CRLF in the path": (lambda p: _request(p + "\r\nX-Injected: a"), False),
    "header without a colon": (lambda p: _request(p, b"X-Note"), False),
}
PATHS = {"ingest": "/v1/webhooks/transactions", "api": "/v1/outbox/1/retry"}


def exchange(url: str, request: bytes, truncated: bool) -> bytes:
    """Everything the server sends back before closing; a truncated request is followed by
    the end of the client's side, so that the server sees it will get no more."""
    with socket.create_connection(address(url), timeout=30) as client:
        client.sendall(request)
        if truncated:
            client.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := client.recv(65536):
                received += chunk
    return received


def assert_no_5xx(received: bytes, case: str) -> None:
    """An answer below 500, or none (a server may just close a request it cannot read)."""
    if received:
        status = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
        assert status, f"{case}: not an HTTP answer: {received[:200]!r}"
        assert int(status.group(1)) < 500, f"{case}: {received[:400]!r}"


def server_logs(hostile: Hostile, names: tuple[str, ...]) -> dict[str, int]:
    return {name: len(hostile.pipeline.processes[name].output()) for name in names}


def assert_no_error_logged(hostile: Hostile, since: dict[str, int]) -> None:
    for name, offset in since.items():
        logged = hostile.pipeline.processes[name].output()[offset:]
        assert "Traceback" not in logged, f"{name}: {logged[-3000:]}"
        assert " ERROR " not in logged, f"{name}: {logged[-3000:]}"


def target(hostile: Hostile, fronted: Front, server: str, path: str) -> str:
    """The address of `server` (ingest or api), reached directly or through the front."""
    pipeline = hostile.pipeline
    return {("ingest", "direct"): pipeline.ingest_url, ("api", "direct"): pipeline.api_url,
            ("ingest", "front"): fronted.ingest_url, ("api", "front"): fronted.api_url}[
        server, path]


@pytest.mark.parametrize("server", ["ingest", "api"])
@pytest.mark.parametrize("path", ["direct", "front"])
def test_malformed_raw_requests_get_no_5xx_and_log_no_traceback(
        hostile: Hostile, fronted: Front, server: str, path: str) -> None:
    url = target(hostile, fronted, server, path)
    since = server_logs(hostile, (server,))
    answers = {}
    for case, (request, truncated) in RAW.items():
        answers[case] = exchange(url, request(PATHS[server]), truncated)
        assert_no_5xx(answers[case], case)
    # the API reads no body: directly, it answers the request as it stands, then closes
    if (server, path) != ("api", "direct"):
        for case in ("chunk size zz", "chunk size -2", "chunk size 0x2",
                     "chunk data without its CRLF"):
            assert answers[case].startswith(b"HTTP/1.1 400 "), f"{case}: {answers[case][:300]!r}"
    assert_no_error_logged(hostile, since)
    assert answers_200(f"{url}/healthz") is None  # still serving


def test_a_malformed_chunked_body_is_a_json_400_from_ingest_itself(hostile: Hostile) -> None:
    for size in (b"zz", b"-2", b"0x2"):
        request = _chunked(PATHS["ingest"], size + b"\r\nab\r\n0\r\n\r\n")
        head, _, body = exchange(hostile.pipeline.ingest_url, request, False).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert b"\r\nX-Request-ID: " in head, head
        assert orjson.loads(body)["error"] == "bad_request", body


chunk_size_lines = st.binary(min_size=1, max_size=12).filter(lambda b: b"\r" not in b)


@pytest.mark.parametrize("server", ["ingest", "api"])
@pytest.mark.parametrize("path", ["direct", "front"])
def test_fuzzed_chunk_sizes_get_no_5xx_and_log_no_traceback(
        hostile: Hostile, fronted: Front, server: str, path: str) -> None:
    url = target(hostile, fronted, server, path)
    since = server_logs(hostile, (server,))

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(size=chunk_size_lines, data=st.binary(max_size=8))
    def never_5xx(size: bytes, data: bytes) -> None:
        request = _chunked(PATHS[server], size + b"\r\n" + data + b"\r\n0\r\n\r\n")
        assert_no_5xx(exchange(url, request, True), repr(size))

    never_5xx()
    assert_no_error_logged(hostile, since)
