"""The sandbox's SMTP server: accepts every message for every recipient into the local
:class:`Inbox`, on the sandbox's own event loop. Plain SMTP (no TLS); ``AUTH`` is offered and
any login accepted, so a mailer configured with a user and password works too."""

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from services.sandbox.inbox import Inbox
from services.sandbox.timing import Clock

DEFAULT_SMTP_PORT = 8025
DATA_SIZE_LIMIT = 2 * 1024 * 1024
"""The largest message accepted (bytes); a larger one is refused with 552."""
HOSTNAME = "inbox.sandbox.local"


class _QuietDeprecation(logging.Filter):
    """aiosmtpd itself sets the deprecated ``Session.login_data`` on every login, and warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_LIBRARY_LOG = logging.getLogger("mail.log")
# Its INFO and DEBUG lines name senders, recipients and login data: personal data stays out.
_LIBRARY_LOG.setLevel(logging.WARNING)
_LIBRARY_LOG.addFilter(_QuietDeprecation())


class InboxHandler:
    """aiosmtpd's handler: a message's bytes go into the inbox as they arrived."""

    def __init__(self, inbox: Inbox, clock: Clock) -> None:
        self._inbox = inbox
        self._clock = clock

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", errors="replace")
        message = self._inbox.deliver(
            envelope.mail_from or "", list(envelope.rcpt_tos), content, self._clock()
        )
        return f"250 Message accepted for delivery: inbox message {message.number}"


def _any_login(*_: Any) -> AuthResult:
    return AuthResult(success=True)


async def start_smtp(inbox: Inbox, host: str, port: int, clock: Clock) -> asyncio.Server:
    """Listen on ``host``:``port`` (0: a free port) on the running event loop. Raises
    ``OSError`` when the port cannot be had."""
    loop = asyncio.get_running_loop()
    handler = InboxHandler(inbox, clock)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True,
            hostname=HOSTNAME,
            ident="b24-nps sandbox inbox",
            authenticator=_any_login,
            auth_require_tls=False,
            loop=loop,
        )

    return await loop.create_server(protocol, host=host, port=port)
