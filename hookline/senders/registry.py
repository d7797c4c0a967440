"""The registry of sources: adding a sender is one module and one line here."""

from __future__ import annotations

from types import ModuleType

from hookline.config import Settings
from hookline.senders import bookings, chapa, deadlines, stripe, transactions
from hookline.senders.base import Ingress, Interpreter

SOURCES: dict[str, ModuleType] = {module.NAME: module for module in (
    transactions, bookings, deadlines, stripe, chapa)}


def ingresses(settings: Settings) -> dict[str, Ingress]:
    """The ingress side of every source that is configured (the others answer 404)."""
    built = {name: module.ingress(settings) for name, module in SOURCES.items()}
    return {name: ingress for name, ingress in built.items() if ingress is not None}


def interpreters() -> dict[str, Interpreter]:
    """Each source's interpretation of its records, by source name."""
    return {name: module.interpret for name, module in SOURCES.items()}
