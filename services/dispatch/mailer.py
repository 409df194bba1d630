"""Sending dispatch's e-mail over SMTP (docs/dispatch.md, One message per request): the shared
SMTP sender (`shared/smtp.py`) on dispatch's `DISPATCH_SMTP_*` settings.

A refusal the server gives for good (5xx: no such mailbox, rejected) is `MessageRejectedError`;
anything else (the server down, a timeout, 4xx) is `MailerUnavailableError`, tried again later.
"""

from __future__ import annotations

from email.message import EmailMessage

from services.dispatch.settings import DispatchSettings
from shared.smtp import MailerUnavailableError, MessageRejectedError, SmtpMailer, SmtpSettings

__all__ = ["Mailer", "MailerUnavailableError", "MessageRejectedError"]


class Mailer:
    def __init__(self, settings: DispatchSettings) -> None:
        self._smtp = SmtpMailer(
            SmtpSettings(
                host=settings.smtp_host,
                port=settings.smtp_port,
                user=settings.smtp_user,
                password=settings.smtp_password,
                tls=settings.smtp_tls,
                timeout_s=settings.smtp_timeout_s,
                _env_file=None,
            )
        )

    async def send(self, message: EmailMessage) -> None:
        await self._smtp.send(message)
