"""Settings of the reports app, from the environment (and `.env`): `REPORTS_HOST`, `REPORTS_PORT`,
`REPORTS_TOKEN` (what every page and `/api/*` request must present; when it is unset or blank,
`nps run reports` generates one at start-up and prints it once), `REPORTS_FRAME_SECRET` (signs
the sessions of the dashboard inside a Bitrix24 portal; unset: a random one per process, so a
restart ends the open sessions and replicas must share one), `REPORTS_PUBLIC_URL` (where the
portals reach the app, e.g. behind a TLS proxy; the contact and deal cards' tabs are bound to
its `/frame`; unset: `http://REPORTS_HOST:REPORTS_PORT`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReportsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REPORTS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    token: SecretStr | None = None
    frame_secret: SecretStr | None = None
    public_url: str | None = None

    @field_validator("token", "frame_secret", "public_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def public(self) -> str:
        """Where the portals reach the app (no trailing slash): `REPORTS_PUBLIC_URL`, else
        the listener's own address."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
