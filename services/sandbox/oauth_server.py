"""The OAuth server of the sandbox (oauth.bitrix.info's part): the registered application,
token lifetimes, ``/oauth/token/`` and the server's ``app.info``, over the token books of the
named portals (each portal keeps its own grants, see ``application``)."""

import hmac
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.sandbox.oauth import OAuthError, OAuthSettings, TokenError, TokenPair
from services.sandbox.timing import Clock, iso

if TYPE_CHECKING:
    from services.sandbox.application import AppSide

DEFAULT_SCOPES = ("crm", "bizproc", "placement", "task", "user", "basic")
DEFAULT_BASE_URL = "http://127.0.0.1:8090"


class EndpointError(Exception):
    """The token endpoint's answer to a request it refuses."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description


class AppRegistration(BaseModel):
    """The one application the sandbox knows (a local application of every named portal):
    its credentials, its URLs and the scopes it asked for."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    install_url: str | None = None
    """"Initial installation path": the page the install flow opens (a POST in a frame)."""
    handler_url: str | None = None
    """"Your handler path": the application's page (left menu), and ``redirect_uri``."""
    callback_url: str | None = None
    """"Callback link for the installation event": where ``ONAPPINSTALL`` goes."""
    scope: list[str] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    version: int = Field(default=1, ge=1)
    name: str = "b24-nps"

    @field_validator("install_url", "handler_url", "callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value

    @field_validator("scope", mode="before")
    @classmethod
    def _scopes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def hosts(self) -> set[str]:
        """Hosts of the application's URLs: a robot's handler must be on one of them."""
        urls = (self.install_url, self.handler_url, self.callback_url)
        return {urlsplit(url).hostname or "" for url in urls if url}

    def scope_text(self) -> str:
        return ",".join(self.scope)

    def describe(self) -> dict[str, Any]:
        """Everything but the secret."""
        return self.model_dump(exclude={"client_secret"})


class OAuthServer:
    """oauth.bitrix.info for the sandbox's named portals."""

    def __init__(
        self,
        *,
        clock: Clock,
        registration: AppRegistration | None = None,
        settings: OAuthSettings | None = None,
        base_url: str | None = None,
        new_token: Callable[[], str] | None = None,
    ) -> None:
        self.clock = clock
        self.registration = registration
        self.settings = settings or OAuthSettings()
        self.base_url = base_url.rstrip("/") if base_url else None
        self.new_token = new_token or (lambda: secrets.token_hex(16))
        self.sides: dict[str, AppSide] = {}
        self.counters: dict[str, Counter[str]] = {}

    # --- where it is ------------------------------------------------------------------------

    @property
    def root(self) -> str:
        return self.base_url or DEFAULT_BASE_URL

    @property
    def server_endpoint(self) -> str:
        return f"{self.root}/rest/"

    @property
    def domain(self) -> str:
        return urlsplit(self.root).netloc

    # --- /oauth/token/ -------------------------------------------------------------------------

    def token(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """``grant_type=authorization_code`` (``code``) or ``refresh_token``
        (``refresh_token``), with the application's ``client_id`` and ``client_secret``."""
        try:
            kind, given = self._grant(params)
            side = self._side(kind, given)
            pair = self._pair(side, kind, given)
        except EndpointError as refusal:
            return refusal.status, _error(refusal.code, refusal.description)
        side.touch()
        self.count(side.portal.member_id, "exchanges" if kind == "code" else "refreshes")
        return 200, self.token_response(side, pair)

    def _side(self, kind: str, given: str) -> "AppSide":
        """The portal whose book holds the code or refresh token."""
        side = next((s for s in self.sides.values() if s.holds(given, kind)), None)
        if side is None:
            self.count("", "invalid_grant")
            text = "authorization code" if kind == "code" else "refresh token"
            raise EndpointError(400, "invalid_grant", f"Invalid {text}")
        if side.state.settings.payment_required:
            self.count(side.portal.member_id, "payment_required")
            raise EndpointError(402, "PAYMENT_REQUIRED", "Payment required")
        return side

    def _pair(self, side: "AppSide", kind: str, given: str) -> TokenPair:
        book, now = side.state.tokens, self.clock()
        try:
            if kind == "code":
                return book.exchange(given, now, self.settings, self.new_token)
            return book.rotate(given, now, self.settings, self.new_token)
        except OAuthError as exc:
            self.count(side.portal.member_id, "invalid_grant")
            raise EndpointError(400, exc.code, exc.description) from None

    def _grant(self, params: Mapping[str, Any]) -> tuple[str, str]:
        """(``code`` or ``refresh_token``, its value) of a token request from the application."""
        app = self.registration
        client_id = str(params.get("client_id") or "")
        secret = str(params.get("client_secret") or "")
        if (
            app is None
            or not hmac.compare_digest(client_id.encode(), app.client_id.encode())
            or not hmac.compare_digest(secret.encode(), app.client_secret.encode())
        ):
            raise EndpointError(401, "invalid_client", "Invalid client credentials")
        grant_type = str(params.get("grant_type") or "")
        if grant_type == "authorization_code":
            kind = "code"
        elif grant_type == "refresh_token":
            kind = "refresh_token"
        else:
            raise EndpointError(
                400,
                "invalid_request",
                f"grant_type: expected authorization_code or refresh_token, got {grant_type!r}",
            )
        given = str(params.get(kind) or "")
        if not given:
            raise EndpointError(400, "invalid_request", f"{kind}: missing")
        return kind, given

    def token_response(self, side: "AppSide", pair: TokenPair) -> dict[str, Any]:
        app = self.registration
        return {
            "access_token": pair.access_token,
            "expires": pair.expires,
            "expires_in": pair.expires_in,
            "scope": app.scope_text() if app else "",
            "domain": self.domain,
            "server_endpoint": self.server_endpoint,
            "status": side.state.settings.status,
            "client_endpoint": side.client_endpoint,
            "member_id": side.portal.member_id,
            "user_id": pair.user_id,
            "refresh_token": pair.refresh_token,
        }

    # --- /rest/app.info ------------------------------------------------------------------------

    def app_info(self, token: str | None) -> tuple[int, dict[str, Any]]:
        """The server's ``app.info``: which application, portal and user a token is for."""
        side = next((s for s in self.sides.values() if token and s.holds(token, "access")), None)
        if token is None or side is None or self.registration is None:
            return 401, _error("invalid_token", "The access token provided is invalid.")
        try:
            grant = side.state.tokens.check(token, self.clock())
        except TokenError as exc:
            return 401, _error(exc.code, exc.description)
        app, state = self.registration, side.state
        self.count(side.portal.member_id, "app_info")
        return 200, {
            "result": {
                "client_id": app.client_id,
                "scope": app.scope_text(),
                "expires": iso(grant.expires),
                "user_id": grant.user_id,
                "install": {
                    "installed": state.installed,
                    "version": state.version,
                    "status": state.settings.status,
                    "scope": app.scope_text(),
                    "domain": side.portal.domain,
                    "uri": side.portal_url,
                    "client_endpoint": side.client_endpoint,
                    "member_id": side.portal.member_id,
                    "member_type": "PORTAL",
                },
            }
        }

    # --- bookkeeping ---------------------------------------------------------------------------

    def count(self, member_id: str, what: str) -> None:
        self.counters.setdefault(member_id, Counter())[what] += 1

    def reset_counters(self) -> None:
        self.counters.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "server_endpoint": self.server_endpoint,
            "token_url": f"{self.root}/oauth/token/",
            "settings": self.settings.model_dump(),
            "application": self.registration.describe() if self.registration else None,
            "portals": sorted(self.sides),
            "counters": {member: dict(counts) for member, counts in self.counters.items()},
        }

    def __iter__(self) -> Iterator["AppSide"]:
        return iter(self.sides.values())


def _error(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description}
