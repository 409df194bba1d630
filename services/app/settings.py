"""Settings of the application service, from the environment (and `.env`), prefix `APP_`
(docs/app.md, Settings). The OAuth server and the client id and secret are the shared
`BITRIX24_OAUTH_URL`, `BITRIX24_CLIENT_ID` and `BITRIX24_CLIENT_SECRET`."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import Settings

BX24_JS = "https://api.bitrix24.com/api/v1/"


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8003, ge=1, le=65535)
    public_url: str | None = None
    """Where portals reach the application (`https://nps.example.com`): its install URL is
    `<public_url>/app/install`, its event URL `<public_url>/app/events`; default http://host:port."""
    ingest_webhook_url: str | None = None
    """The public URL of ingest's webhook endpoint the portal's item and deal events are bound to
    (`https://nps.example.com/webhooks/bitrix24`); default ingest's own listener."""
    bx24_js_url: str = BX24_JS
    """The BX24 JavaScript library the install page loads (the sandbox serves a stand-in at
    `/sandbox/bx24.js`)."""
    frame_url: str | None = None
    """The reports app's `/frame` where portals reach it (`https://nps.example.com:8001/frame`):
    the application's tab in contact cards is bound to it at install, update and every re-bind;
    unset: an administrator's first visit of the dashboard binds it."""
    rebind_s: float = Field(default=3600.0, gt=0)
    """How often every installed portal's bindings, widgets and robots are checked and what it
    lost bound again (and once at start)."""

    @field_validator("public_url", "ingest_webhook_url", "frame_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def base_url(self) -> str:
        """The application's public address, without a trailing slash."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def events_url(self) -> str:
        return f"{self.base_url()}/app/events"

    def robot_url(self) -> str:
        """The "Send NPS survey" robot's handler (on the application's own host, as
        `bizproc.robot.add` requires)."""
        return f"{self.base_url()}/app/robot"

    def ingest_url(self, settings: Settings) -> str:
        """Where the portal's item and deal events go."""
        if self.ingest_webhook_url is not None:
            return self.ingest_webhook_url
        return f"http://{settings.ingest_host}:{settings.ingest_port}/webhooks/bitrix24"
