"""The operator console: server-rendered pages under /console/ over the API's read side, signed
in with an operator token, every form carrying a CSRF token."""

from __future__ import annotations

import logging
from typing import Any, cast

from flask import Blueprint, Flask, Response, abort, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from hookline.config import Settings
from hookline.web.console import pages, session
from hookline.web.console.present import pretty_json
from hookline.web.console.session import PREFIX, Tokens

log = logging.getLogger(__name__)
OPEN = frozenset({"console.sign_in", "console.static"})  # what answers before sign-in


def register_console(app: Flask, settings: Settings, engine: Engine) -> None:
    """Serve the console when HOOKLINE_CONSOLE_SECRET is set; without it there is none."""
    if settings.console_secret is None:
        log.warning("HOOKLINE_CONSOLE_SECRET is not set: the console (%s/) is off", PREFIX)
        return
    session.configure(app, settings.console_secret)
    csrf = CSRFProtect(app)
    tokens = Tokens(settings.console_secret, settings.operator_tokens)
    blp = Blueprint("console", __name__, url_prefix=PREFIX, template_folder="templates",
                    static_folder="static")
    blp.add_app_template_filter(pretty_json, "pretty_json")

    @blp.before_request
    def gate() -> Response | None:
        if request.method == "POST":
            csrf.protect()
        if request.endpoint in OPEN:
            return None
        operator = session.signed_in(tokens)
        if operator is None:
            if request.method == "GET":
                return cast(Response, redirect(url_for("console.sign_in")))
            abort(401)
        g.operator = operator
        return None

    @blp.app_context_processor
    def who() -> dict[str, Any]:
        return {"operator": g.get("operator")}

    blp.register_error_handler(CSRFError, _refused_form)
    blp.register_error_handler(HTTPException, _error_page)
    pages.add_routes(blp, settings, engine, tokens)
    app.register_blueprint(blp)


def _refused_form(exc: CSRFError) -> tuple[str, int]:
    log.warning("console form refused on %s: %s", request.path, exc.description)
    return render_template("console/error.html", code=400, title="Form refused",
                           detail="This form expired or did not come from this console; "
                                  "reload the page and send it again."), 400


def _error_page(exc: HTTPException) -> tuple[str, int]:
    return render_template("console/error.html", code=exc.code or 500, title=exc.name,
                           detail=exc.description), exc.code or 500
