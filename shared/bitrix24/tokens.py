"""The token book of the Bitrix24 application: each installed portal's OAuth pair in PostgreSQL
(`bitrix24_app_portals`, owned here), refreshed once however many callers find it expired
(docs/app.md, docs/bitrix24-client.md "Application auth").

- `OAuthServer` talks to the OAuth server (oauth.bitrix.info, or the sandbox): the code
  exchange, the refresh, and `app.info` to learn whose a token is. The client secret goes there
  and nowhere else; it is never in a repr, a log line or an error.
- `TokenBook` reads and writes the portals' rows. `access(member_id)` gives the current access
  token (cached in the process); `refresh(member_id, stale)` renews it **single-flight**: one
  asyncio lock per portal in the process, then a transaction holding a PostgreSQL advisory lock
  for that portal across processes, the row read again: when its access token is no longer
  `stale` (someone refreshed meanwhile) that pair is used; otherwise the OAuth server is asked and
  the new pair is **committed before it is returned**, so a pair in use is always on disk (a
  refresh token is spent by its use: a pair lost after a refresh would lose the portal).
  `invalid_grant` marks the portal `revoked` (committed) and raises `PortalRevoked`.
- `PortalSession` is one portal's view of the book: what `Bitrix24Client` in application mode
  calls with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from pydantic import SecretStr

from shared.bitrix24.errors import (
    PermanentBitrix24Error,
    PortalNotInstalled,
    PortalRevoked,
    PortalUnavailable,
)
from shared.bitrix24.oauth import (
    AnswerError,
    Refusal,
    TokenPair,
    expired,
    parse_token_answer,
    refusal,
)
from shared.db import Conn
from shared.logging import get_logger
from shared.portal_config import ConfigError
from shared.settings import Settings

Clock = Callable[[], float]

log = get_logger(__name__)

_LOCK_CLASS = 0x0B24
"""The first key of the advisory locks that serialise one portal's refreshes (the second is the
hash of its member_id)."""


@dataclass(frozen=True)
class AppCredentials:
    """Where the OAuth server is and who the application is. The secret never shows."""

    oauth_url: str
    client_id: str
    client_secret: SecretStr

    @classmethod
    def from_settings(cls, settings: Settings) -> AppCredentials:
        """The application's credentials, or a `ConfigError` naming what is missing."""
        missing = [
            name
            for name, value in (
                ("BITRIX24_CLIENT_ID", settings.bitrix24_client_id),
                ("BITRIX24_CLIENT_SECRET", settings.bitrix24_client_secret),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set: expected the client_id and client_secret of "
                "the Bitrix24 application (docs/app.md)"
            )
        assert settings.bitrix24_client_id is not None
        assert settings.bitrix24_client_secret is not None
        return cls(
            settings.bitrix24_oauth_url.rstrip("/"),
            settings.bitrix24_client_id,
            settings.bitrix24_client_secret,
        )


@dataclass(frozen=True)
class TokenOwner:
    """What the OAuth server's `app.info` says about an access token: whose application, which
    portal (its REST root, domain, member_id) and scopes."""

    client_id: str
    member_id: str
    domain: str
    client_endpoint: str
    scope: str


@dataclass(frozen=True)
class Access:
    """The token a call goes with, and where it goes. The token never shows in a repr."""

    member_id: str
    client_endpoint: str
    access_token: str
    expires_at: float

    def __repr__(self) -> str:
        return f"Access(member_id={self.member_id!r}, expires_at={self.expires_at:.0f})"


@dataclass(frozen=True)
class AppPortal:
    """A row of `bitrix24_app_portals`; tokens never show in a repr."""

    member_id: str
    domain: str
    client_endpoint: str
    status: str
    scope: str
    access_token: str | None
    refresh_token: str | None
    expires_at: float | None
    application_token: str | None
    version: int | None = None
    """The application's version on the portal (`ONAPPINSTALL`'s or `ONAPPUPDATE`'s
    `data[VERSION]`); None until an event named it."""

    def __repr__(self) -> str:
        return f"AppPortal(member_id={self.member_id!r}, status={self.status!r})"

    def access(self) -> Access:
        """The usable pair, or `PortalNotInstalled` saying why there is none."""
        if self.status == "revoked":
            raise PortalRevoked(
                self.member_id,
                "revoked",
                f"portal {self.member_id}: its refresh token was refused by the OAuth server; "
                "the application must be installed on it again",
            )
        if self.status != "installed" or self.access_token is None or self.expires_at is None:
            raise PortalNotInstalled(
                self.member_id,
                self.status,
                f"portal {self.member_id}: the application is {self.status} there; "
                "expected an installed portal with tokens",
            )
        return Access(self.member_id, self.client_endpoint, self.access_token, self.expires_at)


class OAuthServer:
    """The OAuth server's token endpoint and `app.info`, over HTTP (`transport` for tests)."""

    def __init__(
        self,
        credentials: AppCredentials,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        clock: Clock = time.time,
        timeout_s: float = 20.0,
    ) -> None:
        self.credentials = credentials
        self._clock = clock
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"OAuthServer(url={self.credentials.oauth_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def exchange_code(self, code: str) -> TokenPair:
        """The first pair for an authorisation `code` (valid 30 s, once)."""
        return await self._token({"grant_type": "authorization_code", "code": code})

    async def refresh(self, refresh_token: str) -> TokenPair:
        """A new pair for `refresh_token`, which this uses up."""
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def _token(self, grant: Mapping[str, str]) -> TokenPair:
        credentials = self.credentials
        params = {
            **grant,
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret.get_secret_value(),
        }
        data = await self._get(f"{credentials.oauth_url}/oauth/token/", params, "oauth.token")
        try:
            return parse_token_answer(data, self._clock())
        except AnswerError as exc:
            raise PermanentBitrix24Error("oauth.token", "INVALID_RESPONSE", str(exc), 200) from None

    async def token_owner(self, access_token: str) -> TokenOwner:
        """Whose `access_token` is, from the OAuth server's `app.info` (not from the portal: a
        form or an event can name any portal, the OAuth server knows the token's)."""
        url = f"{self.credentials.oauth_url}/rest/app.info"
        data = await self._get(url, {"auth": access_token}, "app.info")
        result = data.get("result")
        install = result.get("install") if isinstance(result, Mapping) else None
        if not isinstance(result, Mapping) or not isinstance(install, Mapping):
            raise PermanentBitrix24Error(
                "app.info", "INVALID_RESPONSE", "no result.install in the answer", 200
            )
        endpoint = install.get("client_endpoint")
        if not isinstance(endpoint, str) or not _http_url(endpoint):
            raise PermanentBitrix24Error(
                "app.info",
                "INVALID_RESPONSE",
                "result.install.client_endpoint: expected the portal's REST root, an http(s) URL",
                200,
            )
        return TokenOwner(
            client_id=str(result.get("client_id") or ""),
            member_id=str(install.get("member_id") or ""),
            domain=str(install.get("domain") or ""),
            client_endpoint=endpoint.rstrip("/") + "/",
            scope=str(install.get("scope") or result.get("scope") or ""),
        )

    async def is_admin(self, owner: TokenOwner, access_token: str) -> bool:
        """Whether the user `access_token` belongs to administers the portal: its `user.admin`,
        called at the REST root the OAuth server named for the token (`owner`)."""
        url = f"{owner.client_endpoint}user.admin.json"
        data = await self._get(url, {"auth": access_token}, "user.admin", "the portal")
        return data.get("result") is True

    async def _get(
        self, url: str, params: Mapping[str, str], method: str, who: str = "the OAuth server"
    ) -> Mapping[str, Any]:
        """GET `url` of `who` (as the docs show the token endpoint called); the query holds the
        secret or a token, so no URL of it reaches an error (httpx's own request log is off)."""
        try:
            reply = await self._http.get(url, params=params)
        except httpx.HTTPError as exc:
            raise PortalUnavailable(
                method, "NETWORK_ERROR", f"{who}: {type(exc).__name__}", None
            ) from None
        try:
            data = reply.json()
        except ValueError:
            data = None
        if not isinstance(data, Mapping):
            kind = Refusal.TRANSIENT if reply.status_code >= 500 else Refusal.OTHER
            raise _oauth_error(
                method, kind, "INVALID_RESPONSE", "no JSON", reply.status_code, who=who
            )
        if "error" in data or reply.status_code >= 400:
            code = str(data.get("error") or "")
            description = str(data.get("error_description") or "")
            kind = refusal(reply.status_code, code)
            raise _oauth_error(method, kind, code, description, reply.status_code, who=who)
        return data


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class OAuthRefused(PermanentBitrix24Error):  # noqa: N818 - named like the other errors
    """The OAuth server refused for good; `.refusal` says what it means for the portal."""

    def __init__(
        self, method: str, kind: Refusal, code: str, description: str, status: int
    ) -> None:
        self.refusal = kind
        super().__init__(method, code, description, status)


def _oauth_error(
    method: str, kind: Refusal, code: str, description: str, status: int, *, who: str
) -> PermanentBitrix24Error | PortalUnavailable:
    text = f"{who} refused ({kind.value}): {description or code}"
    if kind is Refusal.TRANSIENT:
        return PortalUnavailable(method, code or "INVALID_RESPONSE", text, status)
    return OAuthRefused(method, kind, code, text, status)


_COLUMNS = (
    "member_id, domain, client_endpoint, status, scope, access_token, refresh_token,"
    " extract(epoch FROM expires_at)::float8 AS expires_at, application_token,"
    " app_version AS version"
)


def _portal(row: asyncpg.Record) -> AppPortal:
    return AppPortal(**dict(row))


async def app_portal(conn: Conn | asyncpg.Pool, member_id: str) -> AppPortal | None:
    """The row of portal `member_id`, or None when the application never met it (the read other
    services use, e.g. the dashboard in the portal: is this member_id an installed portal, and
    where is its REST root)."""
    sql = f"SELECT {_COLUMNS} FROM bitrix24_app_portals WHERE member_id = $1"  # noqa: S608
    row = await conn.fetchrow(sql, member_id)
    return None if row is None else _portal(row)


async def app_portals(conn: Conn | asyncpg.Pool) -> list[AppPortal]:
    """Every portal's row, by member_id (the CLI's `--portal` resolves among them)."""
    sql = f"SELECT {_COLUMNS} FROM bitrix24_app_portals ORDER BY member_id"  # noqa: S608
    return [_portal(row) for row in await conn.fetch(sql)]


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class TokenBook:
    """The installed portals and their tokens; see the module docstring.

    `clock` decides when a stored access token counts as expired.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        oauth: OAuthServer,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._pool = pool
        self.oauth = oauth
        self._clock = clock
        self._cache: dict[str, Access] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"TokenBook(portals_cached={len(self._cache)})"

    # --- rows ---------------------------------------------------------------------------------

    async def portal(self, member_id: str, conn: Conn | None = None) -> AppPortal | None:
        """The portal's row, or None when the application never met it."""
        return await app_portal(conn or self._pool, member_id)

    async def portals(self) -> list[AppPortal]:
        """Every portal's row, by member_id."""
        return await app_portals(self._pool)

    async def install(
        self,
        pair: TokenPair,
        *,
        domain: str,
        application_token: str | None,
        replace_token: bool = False,
    ) -> None:
        """Record an install (or a reinstall: the row is active again) with its first pair.
        The `application_token` of a row already installed is kept (only a portal that is not
        installed takes a new one; None keeps the one stored: it may come with `ONAPPINSTALL`
        later), unless `replace_token` (an `ONAPPINSTALL` verified as its administrator's: an
        updated application's portal sends its new token). Serialised with the portal's
        refreshes (their advisory lock)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock(conn, pair.member_id)
            kept = await conn.fetchval(
                """
                INSERT INTO bitrix24_app_portals AS p (member_id, domain, client_endpoint,
                    access_token, refresh_token, expires_at, application_token, scope, status)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'installed')
                ON CONFLICT (member_id) DO UPDATE SET
                    domain = excluded.domain, client_endpoint = excluded.client_endpoint,
                    access_token = excluded.access_token, refresh_token = excluded.refresh_token,
                    expires_at = excluded.expires_at,
                    application_token = CASE
                        WHEN $9::bool AND excluded.application_token IS NOT NULL
                        THEN excluded.application_token
                        WHEN p.status = 'installed' AND p.application_token IS NOT NULL
                        THEN p.application_token
                        ELSE coalesce(excluded.application_token, p.application_token) END,
                    scope = excluded.scope, status = 'installed',
                    installed_at = CASE WHEN p.status = 'installed' THEN p.installed_at
                        ELSE now() END,
                    uninstalled_at = NULL, revoked_at = NULL, updated_at = now()
                RETURNING $7::text IS NOT NULL AND application_token IS DISTINCT FROM $7
                """,
                pair.member_id,
                domain,
                pair.client_endpoint,
                pair.access_token,
                pair.refresh_token,
                _timestamp(pair.expires_at),
                application_token,
                pair.scope,
                replace_token,
            )
        self._cache.pop(pair.member_id, None)
        log.info("bitrix24_app_installed", member_id=pair.member_id, domain=domain)
        if kept:
            log.warning("bitrix24_app_token_kept", member_id=pair.member_id)

    async def set_application_token(
        self, member_id: str, application_token: str, *, replace: bool = False
    ) -> bool:
        """Store the portal's `application_token` (from `ONAPPINSTALL`) when the installed row
        has none yet (one stored is kept unless `replace`); False without an installed row."""
        installed = await self._pool.fetchval(
            """
            UPDATE bitrix24_app_portals
            SET application_token = CASE WHEN $3::bool THEN $2
                    ELSE coalesce(application_token, $2) END,
                updated_at = now()
            WHERE member_id = $1 AND status = 'installed'
            RETURNING application_token = $2
            """,
            member_id,
            application_token,
            replace,
        )
        if installed is False:
            log.warning("bitrix24_app_token_kept", member_id=member_id)
        return installed is not None

    async def record_version(self, member_id: str, version: int) -> None:
        """The application's version the installed portal runs (`data[VERSION]` of its
        `ONAPPINSTALL` or `ONAPPUPDATE`)."""
        await self._pool.execute(
            """
            UPDATE bitrix24_app_portals SET app_version = $2, updated_at = now()
            WHERE member_id = $1 AND status = 'installed'
            """,
            member_id,
            version,
        )

    async def uninstall(self, member_id: str) -> bool:
        """Mark the portal uninstalled and erase its tokens (its application_token too: a
        reinstall brings a new one). False when it was not installed. Serialised with the
        portal's refreshes (their advisory lock): none writes a pair after it."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock(conn, member_id)
            done = await conn.execute(
                """
                UPDATE bitrix24_app_portals
                SET status = 'uninstalled', access_token = NULL, refresh_token = NULL,
                    expires_at = NULL, application_token = NULL, uninstalled_at = now(),
                    updated_at = now()
                WHERE member_id = $1 AND status <> 'uninstalled'
                """,
                member_id,
            )
        self._cache.pop(member_id, None)
        return bool(done.endswith(" 1"))

    # --- access and refresh -------------------------------------------------------------------

    def session(self, member_id: str) -> PortalSession:
        """One portal's side of the book, for `Bitrix24Client`."""
        return PortalSession(self, member_id)

    def forget(self, member_id: str) -> None:
        """Drop the process's copy of the portal's token (the portal refused it): the next call
        reads the row again."""
        self._cache.pop(member_id, None)

    async def access(self, member_id: str) -> Access:
        """The access token to call the portal with: the process's copy, else the row's; an
        expired one is refreshed first."""
        current = self._cache.get(member_id)
        if current is None:
            stored = await self.portal(member_id)
            if stored is None:
                raise PortalNotInstalled(
                    member_id,
                    "unknown",
                    f"portal {member_id}: the application was never installed there",
                )
            current = stored.access()
            self._cache[member_id] = current
        if expired(current.expires_at, self._clock()):
            return await self.refresh(member_id, current.access_token)
        return current

    async def refresh(self, member_id: str, stale: str) -> Access:
        """A pair newer than the access token `stale`, refreshed once per portal however many
        callers (in this process and others on the same database) ask at the same time."""
        lock = self._locks.setdefault(member_id, asyncio.Lock())
        async with lock:
            current = self._cache.get(member_id)
            if current is not None and self._fresh(current, stale):
                return current
            try:
                outcome = await self._refresh_row(member_id, stale)
            except PortalNotInstalled:
                self._cache.pop(member_id, None)  # the row says why: nothing cached is good
                raise
            if isinstance(outcome, OAuthRefused):
                self._cache.pop(member_id, None)
                log.warning("bitrix24_portal_revoked", member_id=member_id, code=outcome.code)
                raise PortalRevoked(
                    member_id,
                    "revoked",
                    f"portal {member_id}: the OAuth server refused its refresh token "
                    f"({outcome.code}); marked revoked: the application must be installed "
                    "on it again",
                )
            # Committed (or found committed by another): only now may anyone call with it.
            self._cache[member_id] = outcome
            return outcome

    async def _refresh_row(self, member_id: str, stale: str) -> Access | OAuthRefused:
        """Under the portal's advisory lock: the row's pair when it is no longer `stale`, else
        the OAuth server's new one committed, or the `invalid_grant` refusal with the portal
        marked revoked."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock(conn, member_id)
            stored = await self.portal(member_id, conn)
            if stored is None:
                raise PortalNotInstalled(
                    member_id, "unknown", f"portal {member_id}: no tokens to refresh"
                )
            current = stored.access()
            if self._fresh(current, stale):
                return current
            assert stored.refresh_token is not None
            try:
                pair = await self.oauth.refresh(stored.refresh_token)
            except OAuthRefused as exc:
                if exc.refusal is not Refusal.REVOKED:
                    raise
                await self._revoke(conn, stored)
                return exc
            fresh = await self._store_refresh(conn, stored, pair)
        log.info("bitrix24_token_refreshed", member_id=member_id)
        return fresh

    async def newer(self, member_id: str, stale: str) -> Access | None:
        """After the portal refused `stale` as invalid: the row's pair when it holds another
        (refreshed meanwhile by another process: taken as `refresh` takes it, without asking
        the OAuth server unless that one expired too); None when the row still holds `stale`."""
        stored = await self.portal(member_id)
        if stored is None or stored.access_token in (None, stale):
            return None
        return await self.refresh(member_id, stale)

    def _fresh(self, current: Access, stale: str) -> bool:
        return current.access_token != stale and not expired(current.expires_at, self._clock())

    async def _store_refresh(self, conn: Conn, stored: AppPortal, pair: TokenPair) -> Access:
        if pair.member_id != stored.member_id:
            raise PermanentBitrix24Error(
                "oauth.token",
                "INVALID_RESPONSE",
                f"a refresh for portal {stored.member_id} answered another portal's pair",
                200,
            )
        done = await conn.execute(
            """
            UPDATE bitrix24_app_portals
            SET access_token = $2, refresh_token = $3, expires_at = $4, client_endpoint = $5,
                scope = $6, refreshed_at = now(), updated_at = now()
            WHERE member_id = $1 AND status = 'installed' AND refresh_token = $7
            """,
            stored.member_id,
            pair.access_token,
            pair.refresh_token,
            _timestamp(pair.expires_at),
            pair.client_endpoint,
            pair.scope or stored.scope,
            stored.refresh_token,
        )
        if not done.endswith(" 1"):
            raise _replaced(stored.member_id)
        return Access(pair.member_id, pair.client_endpoint, pair.access_token, pair.expires_at)

    @staticmethod
    async def _revoke(conn: Conn, stored: AppPortal) -> None:
        done = await conn.execute(
            """
            UPDATE bitrix24_app_portals
            SET status = 'revoked', access_token = NULL, refresh_token = NULL,
                expires_at = NULL, revoked_at = now(), updated_at = now()
            WHERE member_id = $1 AND status = 'installed' AND refresh_token = $2
            """,
            stored.member_id,
            stored.refresh_token,
        )
        if not done.endswith(" 1"):
            raise _replaced(stored.member_id)


async def _lock(conn: Conn, member_id: str) -> None:
    """The transaction's advisory lock on the portal: its refreshes, installs and uninstalls
    take it, one at a time."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, member_id)


def _replaced(member_id: str) -> PortalNotInstalled:
    """The row changed under a refresh (uninstalled, or installed again with another pair): the
    refresh's outcome belongs to a grant that is gone."""
    return PortalNotInstalled(
        member_id,
        "replaced",
        f"portal {member_id}: its grant was uninstalled or replaced during a refresh; "
        "expected the pair the refresh started from",
    )


@dataclass(frozen=True)
class PortalSession:
    """One portal's tokens as `Bitrix24Client` uses them."""

    book: TokenBook
    member_id: str

    async def access(self) -> Access:
        return await self.book.access(self.member_id)

    async def refresh(self, stale: str) -> Access:
        return await self.book.refresh(self.member_id, stale)

    async def newer(self, stale: str) -> Access | None:
        return await self.book.newer(self.member_id, stale)

    def forget(self) -> None:
        self.book.forget(self.member_id)
