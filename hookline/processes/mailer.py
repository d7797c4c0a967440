"""`hookline mail`: delivery rounds of the email outbox (hookline/mail/mailer.py) until a
signal, waiting out PostgreSQL outages. Loads neither the web apps, pika nor any sender."""

from __future__ import annotations

import logging

from hookline.config import Settings, mask_url
from hookline.db.connection import Database
from hookline.lifecycle import Stopper
from hookline.mail.mailer import Mailer
from hookline.processes.loop import outages

log = logging.getLogger(__name__)


def run_mailer(settings: Settings, stopper: Stopper) -> None:
    """Deliver until `stopper` is set; several mailers may run at once."""
    mailer = Mailer(settings)
    db = Database(settings.psycopg_url, stopper, autocommit=True)
    log.info("mailer sending through %s", mask_url(settings.smtp_url or ""))
    with outages(db, stopper, log):
        while not stopper.is_set():
            due_in = mailer.deliver_due(db)
            if due_in is not None:  # idle: wake when the next row falls due, within bounds
                stopper.wait(min(1.0, max(0.05, due_in)))
    log.info("mailer stopped")
