"""The registry of sources: adding a sender is one module and one line here."""

from __future__ import annotations

from types import ModuleType

from eventlog.settings import Settings
from ingest.sources import bookings, chapa, scheduler, stripe, transactions
from ingest.sources.base import Ingress, Interpreter

SOURCES: dict[str, ModuleType] = {module.NAME: module for module in (
    transactions, bookings, scheduler, stripe, chapa)}


def ingresses(settings: Settings) -> dict[str, Ingress]:
    """The ingress side of every source that is configured (the others answer 404)."""
    built = {name: module.ingress(settings) for name, module in SOURCES.items()}
    return {name: ingress for name, ingress in built.items() if ingress is not None}


def interpreters() -> dict[str, Interpreter]:
    """Each source's interpretation of its records, by source name."""
    return {name: module.interpret for name, module in SOURCES.items()}
