"""A real SMTP server in the test process (aiosmtpd): what dispatch's e-mails and the weekly
digest are sent to, never a mock."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from services.harness.stack import free_port


class Inbox:
    """An aiosmtpd handler keeping what it receives, or refusing it with `answer`."""

    def __init__(self, answer: str = "250 OK") -> None:
        self.messages: list[EmailMessage] = []
        self.answer = answer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.answer.startswith("250"):
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(message)
        return self.answer


@contextmanager
def smtp_server(handler: Inbox, port: int | None = None) -> Iterator[int]:
    """Serve `handler` on `port` (default: a free one), yielded, while the block runs."""
    port = port or free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
