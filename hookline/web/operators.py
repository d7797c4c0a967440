"""Who calls the operator API or the console, and what each may do: a role check on every
action, and the action's audit row (who, what, on which records), refused attempts included."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import sqlalchemy
from flask import abort, current_app, g, request
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from hookline.config import OperatorToken, Role
from hookline.db import audit

F = TypeVar("F", bound=Callable[..., Any])
AUDIT_ENGINE = "hookline.audit_engine"  # app.extensions key: where refusals are recorded


def caller() -> OperatorToken:
    """Who is calling: the token this request was authenticated with."""
    found: OperatorToken = g.operator
    return found


def requires(role: Role, action: str,
             targets: Callable[[Mapping[str, Any]], Sequence[str]] = lambda _: ()
             ) -> Callable[[F], F]:
    """Only a token of `role` (or above) may call the view: others get a 403 and an audit row
    `refused`; a 4xx from the view itself is audited `failed`. `targets` names the records
    from the URL's arguments. The view writes the `succeeded` row with `record_action`, in
    the transaction of the action."""
    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            who, named = caller(), list(targets(request.view_args or {}))
            g.audit_action = (action, named)
            if not who.may(role):
                _audit_apart(who.name, action, named, {"role": who.role}, "refused")
                abort(403, f"token {who.name!r} is a {who.role}: {action} needs the {role} "
                           "role")
            try:
                return view(*args, **kwargs)
            except HTTPException as exc:
                if exc.code is not None and exc.code < 500:
                    _audit_apart(who.name, action, named,
                                 {"status": exc.code, "error": exc.description}, "failed")
                raise
        checked.required_role = role  # type: ignore[attr-defined]
        return cast(F, checked)
    return decorate


def record_action(conn: sqlalchemy.Connection, detail: Mapping[str, Any] | None = None,
                  targets: Sequence[str] | None = None) -> int:
    """The `succeeded` audit row of the action under way (as `requires` names it), in the
    action's transaction; `targets` when they are known only now (a filter's records)."""
    action, named = g.audit_action
    return audit.record(conn, caller().name, action, named if targets is None else targets,
                        detail)


def record_after(detail: Mapping[str, Any], targets: Sequence[str]) -> None:
    """The `succeeded` row of an action that commits in transactions of its own (a
    reprocess, chunk by chunk): written once it is done, in one more."""
    action, _ = g.audit_action
    _audit_apart(caller().name, action, targets, dict(detail), "succeeded")


def _audit_apart(actor: str, action: str, targets: Sequence[str], detail: dict[str, Any],
                 outcome: audit.Outcome) -> None:
    """An audit row for an attempt that did nothing, in a transaction of its own."""
    engine: Engine = current_app.extensions[AUDIT_ENGINE]
    with engine.begin() as conn:
        audit.record(conn, actor, action, targets, detail, outcome)
