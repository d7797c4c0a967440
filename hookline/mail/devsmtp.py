"""A development SMTP server: every message is kept as an .eml file and announced in one line.

For `hookline up` and for tests; it accepts anything and relays nothing.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from hookline.lifecycle import Stopper

log = logging.getLogger(__name__)


class MailFolder:
    """An aiosmtpd handler that writes each message to `folder` as `<time>-<id>.eml`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        content: bytes = envelope.original_content or envelope.content
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        path = self.folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(content)
        message = message_from_bytes(content, policy=policy.default)
        subject = " ".join(str(message.get("Subject", "")).split())
        print(f"mail {path.name}: to={','.join(envelope.rcpt_tos)} subject={subject!r}",
              flush=True)
        return "250 Message accepted for delivery"


def serve(bind: str, folder: Path, stopper: Stopper) -> None:
    """Serve until the stopper is set (SIGTERM or Ctrl-C), then stop cleanly."""
    host, _, port = bind.rpartition(":")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # one line per message is ours
    controller = Controller(MailFolder(folder), hostname=host, port=int(port))
    controller.start()
    log.info("development SMTP server on %s, keeping messages in %s", bind, folder)
    try:
        while not stopper.wait(1.0):
            pass
    finally:
        controller.stop()
