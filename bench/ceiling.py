"""The ceiling: a bare Flask app that parses the JSON body and answers 202, doing nothing."""

from __future__ import annotations

import orjson
from flask import Flask, Response, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/v1/webhooks/<source>")
    def receive(source: str) -> Response:
        payload = orjson.loads(request.get_data())
        body = orjson.dumps({"id": f"{source}:{payload.get('transaction_id')}",
                             "status": "accepted"})
        return Response(body, status=202, mimetype="application/json")

    return app
