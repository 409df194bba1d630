"""Settings of the survey page, from the environment (and `.env`), prefix `SURVEY_`
(docs/survey.md, Settings).

`SURVEY_KEYS` signs the personal links: comma-separated, the first signs, any verifies, so a key
is rotated by putting the new one first and dropping the old one once its links have expired.
Without it, the sandbox demo uses a fixed, public demo key; with a real portal the page and
`nps survey link` refuse to run.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.portal_config import ConfigError

DEMO_KEY = "sandbox-survey-demo-key"
EXAMPLE_PAGE_CONFIG = Path("config/survey.example.yaml")


class KeysMissingError(ConfigError):
    """No signing key is configured while a real portal is served."""


class SurveySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SURVEY_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8002, ge=1, le=65535)
    public_url: str | None = None
    """The address customers open (`https://nps.example.com`); default: http://host:port."""
    keys: SecretStr | None = None
    link_days: float = Field(default=30.0, gt=0)
    config: Path = Path("config/survey.yaml")
    rate_per_minute: int = Field(default=30, ge=1)
    """Requests a client address may make per minute (and a link, half of it)."""

    @field_validator("keys", "public_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def signing_keys(self, sandbox: bool) -> list[str]:
        """The link keys, newest (signing) first."""
        if self.keys is None:
            if sandbox:
                return [DEMO_KEY]
            raise KeysMissingError(
                "SURVEY_KEYS is not set: give at least one long random key (comma-separated,"
                " the first signs) to sign survey links for a real portal"
            )
        keys = [key.strip() for key in self.keys.get_secret_value().split(",") if key.strip()]
        if not keys:
            raise KeysMissingError("SURVEY_KEYS holds no key; expected comma-separated keys")
        return keys

    def base_url(self) -> str:
        """Where links point, without a trailing slash: `SURVEY_PUBLIC_URL`, else the listener."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        return self.local_url()

    def local_url(self) -> str:
        """The listener as this machine reaches it (a wildcard host as the loopback address)."""
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def page_config_path(self) -> Path:
        """`SURVEY_CONFIG`, or the example when that file does not exist."""
        return self.config if self.config.exists() else EXAMPLE_PAGE_CONFIG

    @property
    def link_max_age_s(self) -> int:
        return int(self.link_days * 86400)
