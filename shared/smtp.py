"""Sending e-mail over SMTP with aiosmtplib, on the `DISPATCH_SMTP_*` settings (docs/dispatch.md,
One message per request; the weekly digest): dispatch's survey messages and the reports
service's digest go through the same server.

A refusal the server gives for good (5xx: no such mailbox, rejected) is `MessageRejectedError`;
anything else (the server down, a timeout, 4xx) is `MailerUnavailableError`, tried again later.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Literal

import aiosmtplib
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Tls = Literal["none", "starttls", "tls"]


class SmtpSettings(BaseSettings):
    """`DISPATCH_SMTP_HOST`, `_PORT`, `_USER`, `_PASSWORD` (a secret), `_TLS`, `_TIMEOUT_S`."""

    model_config = SettingsConfigDict(
        env_prefix="DISPATCH_SMTP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    """The sandbox portal's local inbox listens on 8025; a real server: 587 (starttls) or 465."""
    user: str | None = None
    password: SecretStr | None = None
    tls: Tls = "none"
    timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("user", "password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class MessageRejectedError(Exception):
    """The SMTP server refused the message for good."""


class MailerUnavailableError(Exception):
    """The SMTP server could not be reached or asked to try later."""


class SmtpMailer:
    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self._settings
        try:
            await aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port,
                username=s.user,
                password=None if s.password is None else s.password.get_secret_value(),
                use_tls=s.tls == "tls",
                start_tls=s.tls == "starttls",
                timeout=s.timeout_s,
            )
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise MessageRejectedError(f"SMTP {exc.code}: {exc.message}") from exc
            raise MailerUnavailableError(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailerUnavailableError(f"{type(exc).__name__}: {exc}") from exc
