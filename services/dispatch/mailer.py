"""Sending e-mail over SMTP with aiosmtplib (docs/dispatch.md, One message per request).

A refusal the server gives for good (5xx: no such mailbox, rejected) is `MessageRejectedError`;
anything else (the server down, a timeout, 4xx) is `MailerUnavailableError`, tried again later.
"""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from services.dispatch.settings import DispatchSettings


class MessageRejectedError(Exception):
    """The SMTP server refused the message for good."""


class MailerUnavailableError(Exception):
    """The SMTP server could not be reached or asked to try later."""


class Mailer:
    def __init__(self, settings: DispatchSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self._settings
        try:
            await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_user,
                password=None if s.smtp_password is None else s.smtp_password.get_secret_value(),
                use_tls=s.smtp_tls == "tls",
                start_tls=s.smtp_tls == "starttls",
                timeout=s.smtp_timeout_s,
            )
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise MessageRejectedError(f"SMTP {exc.code}: {exc.message}") from exc
            raise MailerUnavailableError(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailerUnavailableError(f"{type(exc).__name__}: {exc}") from exc
