"""A refused webhook leaves its kept-alive connection usable: the sender's next request on it
is read as a request, not from the refused one's body left on the socket."""

from __future__ import annotations

import http.client
import uuid

import orjson
import pytest

from eventlog.settings import Settings
from tests.abuse.conftest import CANARIES, Hostile
from tests.chaos import webhooks

# Under the size limit, and more than the server drains by itself (64 KiB) after a response.
BODY = orjson.dumps({"transaction_id": "left-on-the-socket",
                     "padding": "x" * (Settings.max_body_bytes - 1024)})


def answer(connection: http.client.HTTPConnection, path: str, body: bytes,
           headers: dict[str, str]) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


@pytest.mark.parametrize(("path", "content_type", "status"), [
    ("/v1/webhooks/no-such-source", "application/json", 404),
    ("/v1/webhooks/transactions", "text/plain", 415),
])
def test_a_delivery_refused_before_its_body_is_read_leaves_the_connection_usable(
        hostile: Hostile, path: str, content_type: str, status: int) -> None:
    host, port = hostile.pipeline.ingest_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        code, text = answer(connection, path, BODY, {"Content-Type": content_type})
        assert code == status, text
        kept = connection.sock
        assert kept is not None, "the server closed the connection after the refusal"

        delivery = webhooks.transaction(f"keepalive-{uuid.uuid4().hex}")
        code, text = answer(connection, "/v1/webhooks/transactions", delivery.body,
                            delivery.headers(CANARIES))
        assert code == 202, text
        assert connection.sock is kept, "the valid delivery went over a new connection"
    finally:
        connection.close()
