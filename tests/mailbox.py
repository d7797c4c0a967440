"""A real SMTP server for tests (aiosmtpd on a free port) that keeps what it accepts."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.controller import Controller


@dataclass
class Mailbox:
    """Accepts every message, or answers each with `reject` (e.g. "550 …") when it is set."""

    port: int
    reject: str | None = None
    delay: float = 0.0  # seconds to take over each message, as a busy server would
    options: dict[str, Any] = field(default_factory=dict)  # TLS, authentication
    messages: list[EmailMessage] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)  # DATA commands per Message-ID
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> Mailbox:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                      **self.options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(self.delay)  # a slow SMTP server: the behaviour under test
        message = message_from_bytes(envelope.original_content or envelope.content,
                                     policy=policy.default)
        with self._lock:
            self.attempts[str(message["Message-ID"])] += 1
            if self.reject is not None:
                return self.reject
            self.messages.append(message)
        return "250 OK"

    def received(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.messages)

    def to(self, recipient: str) -> list[EmailMessage]:
        return [m for m in self.received() if m["To"] == recipient]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(cast(EmailMessage, part).get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(cast(EmailMessage, part).get_content())
