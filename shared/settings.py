"""Process settings from the environment (and `.env`), validated at start-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The local sandbox portal's well-known credentials: used only when no real portal is configured.
SANDBOX_SECRET = "sandbox"  # noqa: S105 - not a secret: the embedded demo portal's fixed key
SANDBOX_APP_TOKEN = "sandbox-app-token"  # noqa: S105 - same: the demo portal's event token
SANDBOX_USER_ID = 1
EXAMPLE_CONFIG = Path("config/portal.example.yaml")
"""The portal YAML of the sandbox's demo portal: used while no real portal and no YAML of one's
own is configured."""


class Settings(BaseSettings):
    """Everything a b24-nps process reads from its environment.

    Secrets are `SecretStr`: they never appear in a repr, a log line or an error message.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/nps")
    database_pool_max: int = Field(default=10, ge=4, le=100)
    """The most PostgreSQL connections one pipeline service opens (its pool; crm_sync's locks
    come from it too): keep the sum over every process under the server's `max_connections`."""
    nps_mode: Literal["webhook", "app"] = "webhook"
    """`webhook`: one portal through its inbound webhook (or the sandbox); `app`: the portals the
    Bitrix24 application is installed on (docs/app.md, "Application mode")."""
    app_portals_reload_s: float = Field(default=10.0, gt=0)
    """Application mode: how often each process reads the installed portals and their stored
    configurations again (an event of a portal not served reads them at once)."""
    bitrix24_webhook_url: SecretStr | None = None
    bitrix24_app_token: SecretStr | None = None
    bitrix24_oauth_url: str = "https://oauth.bitrix.info"
    """The OAuth server of the Bitrix24 application (docs/app.md): tokens come from it only."""
    bitrix24_client_id: str | None = None
    """The application's `client_id` (a local application's code, `local.…`)."""
    bitrix24_client_secret: SecretStr | None = None
    """The application's `client_secret`: sent to the OAuth server only, never to a portal."""
    nps_config: Path = Path("config/portal.yaml")
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8000, ge=1, le=65535)
    ingest_health_port: int = Field(default=9100, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] | None = None
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = Field(default=8090, ge=1, le=65535)
    sandbox_smtp_port: int = Field(default=8025, ge=1, le=65535)
    """The sandbox portal's local inbox (SMTP) `make run` starts; dispatch sends to it."""
    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=None, ge=1, le=65535)
    scoring_health_port: int = Field(default=9101, ge=1, le=65535)
    router_health_port: int = Field(default=9102, ge=1, le=65535)
    crm_sync_health_port: int = Field(default=9103, ge=1, le=65535)
    dispatch_health_port: int = Field(default=9104, ge=1, le=65535)
    """The `HEALTH_PORT` that `nps run all` gives scoring, router and crm_sync."""
    sweep_interval_s: float = Field(default=300.0, gt=0)
    ingest_offline: bool = False
    """Offline intake (docs/ingest.md): the application binds ingest's events `offline` at
    install and ingest pulls them (`event.offline.get`), for portals that cannot reach it."""
    ingest_offline_poll_s: float = Field(default=5.0, gt=0)
    """Seconds between two pulls of a portal's offline queue while it has events."""
    ingest_offline_poll_max_s: float = Field(default=60.0, gt=0)
    """The longest wait between two pulls: an empty queue doubles the wait up to it."""
    config_reload_s: float = Field(default=10.0, gt=0)
    retry_max_attempts: int = Field(default=8, ge=1)
    nps_min_answers: int = Field(default=30, ge=1)
    """Below this many answers `nps report` and the dashboard mark a number as unreliable."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "bitrix24_webhook_url",
        "bitrix24_app_token",
        "bitrix24_client_id",
        "bitrix24_client_secret",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def sandbox(self) -> bool:
        """True when no real portal is configured: the local sandbox portal is the default."""
        return self.bitrix24_webhook_url is None

    def portal_config_path(self) -> Path:
        """The portal YAML every command and service reads: `NPS_CONFIG`, or with the sandbox
        portal and no such file, the demo portal's example YAML."""
        if self.sandbox and not self.nps_config.exists():
            return EXAMPLE_CONFIG
        return self.nps_config

    def portal_webhook_url(self) -> str:
        """The inbound-webhook base URL to call (a secret: never log it)."""
        if self.bitrix24_webhook_url is not None:
            return self.bitrix24_webhook_url.get_secret_value().rstrip("/") + "/"
        return f"http://{self.sandbox_host}:{self.sandbox_port}/rest/{SANDBOX_USER_ID}/{SANDBOX_SECRET}/"

    def app_tokens(self) -> list[str]:
        """The accepted `application_token` values (comma-separated for rotation)."""
        if self.bitrix24_app_token is None:
            return [SANDBOX_APP_TOKEN] if self.sandbox else []
        raw = self.bitrix24_app_token.get_secret_value()
        return [token.strip() for token in raw.split(",") if token.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
