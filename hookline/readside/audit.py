"""The operator audit trail as operators read it: newest first, by actor, action and time."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from hookline.db.audit import OUTCOMES as OUTCOMES
from hookline.db.models import OperatorAudit
from hookline.readside.queries import Listing

_audit = cast(Table, OperatorAudit.__table__)

# ids are given in insertion order: newest first by id, keyset pagination as every list
AUDIT = Listing("audit", _audit, ("id",), {
    "actor": lambda v: _audit.c.actor == v,
    "action": lambda v: _audit.c.action == v,
    "outcome": lambda v: _audit.c.outcome == v,
    "at_after": lambda v: _audit.c.at >= v,
    "at_before": lambda v: _audit.c.at < v,
})
