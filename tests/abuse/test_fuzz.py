"""Whatever arrives at a webhook endpoint (any headers, bytes, encodings, nesting, duplicate
keys, signed or not), ingest answers it without a 5xx, no worker dies, memory stays bounded."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.abuse.conftest import CANARIES, Hostile, rss_bytes
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
