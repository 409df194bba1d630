"""Settings of dispatch, from the environment (and `.env`), prefix `DISPATCH_` (docs/dispatch.md,
Configuration). With the sandbox portal the SMTP server is the sandbox's local inbox."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DispatchSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISPATCH_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    """The sandbox portal's local inbox listens on 8025; a real server: 587 (starttls) or 465."""
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    tick_s: float = Field(default=5.0, gt=0)
    """How often the timer looks for due work (sends, reminders, unanswered requests)."""
    lease_s: float = Field(default=300.0, gt=0)
    """An e-mail send started longer ago than this and not recorded is taken for a crash and
    tried again."""
    batch: int = Field(default=50, ge=1, le=500)
    """Requests the timer takes per round."""

    @field_validator("smtp_user", "smtp_password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
