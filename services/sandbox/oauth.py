"""The OAuth server's book of one portal's grants (pure): authorization codes, access tokens and
refresh tokens, their lifetimes and rotation, as oauth.bitrix.info keeps them.

- A ``code`` lives ``code_ttl_s`` (30 s) and is exchanged once.
- An access token lives ``access_ttl_s`` (1 h); past it the portal answers ``expired_token``.
- A refresh token lives ``refresh_ttl_s`` (180 days) and is used once: refreshing returns a new
  pair, and the used refresh token is then refused with ``invalid_grant`` (a modelled choice,
  see docs/sandbox.md). The access token issued with it stays valid until it expires.
- Uninstalling the application revokes everything: every token is then unknown
  (``invalid_token`` at the portal, ``invalid_grant`` at the token endpoint).

Time is passed in (``now``, Unix seconds) and token strings come from ``new_token``, so tests
drive both.
"""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

TokenFactory = Callable[[], str]

DAY = 86_400.0


class OAuthSettings(BaseModel):
    """Lifetimes, in seconds (``PUT /sandbox/oauth`` changes them for tokens issued after)."""

    model_config = ConfigDict(extra="forbid")

    access_ttl_s: float = Field(default=3600.0, gt=0)
    refresh_ttl_s: float = Field(default=180 * DAY, gt=0)
    code_ttl_s: float = Field(default=30.0, gt=0)


class OAuthError(Exception):
    """The token endpoint's refusal: an OAuth 2.0 error code and its description."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class TokenError(Exception):
    """A portal's refusal of an access token: ``expired_token`` or ``invalid_token``."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


EXPIRED = TokenError("expired_token", "The access token provided has expired.")
INVALID = TokenError("invalid_token", "The access token provided is invalid.")


class AccessGrant(BaseModel):
    user_id: int
    expires: float


class RefreshGrant(BaseModel):
    user_id: int
    expires: float
    used: bool = False


class CodeGrant(BaseModel):
    user_id: int
    expires: float
    used: bool = False


@dataclass(frozen=True)
class TokenPair:
    """What the token endpoint (and the install flow) hands out."""

    access_token: str
    refresh_token: str
    expires: int
    expires_in: int
    user_id: int


class TokenBook(BaseModel):
    """Every grant of one portal's installation (saved in its state file)."""

    access: dict[str, AccessGrant] = Field(default_factory=dict)
    refresh: dict[str, RefreshGrant] = Field(default_factory=dict)
    codes: dict[str, CodeGrant] = Field(default_factory=dict)
    event_tokens: dict[int, str] = Field(default_factory=dict)
    """The access token put into events for each user, reused while it has half its life."""

    def issue(
        self, user_id: int, now: float, settings: OAuthSettings, new_token: TokenFactory
    ) -> TokenPair:
        """A new access and refresh token for ``user_id``."""
        self.prune(now)
        access = new_token()
        refresh = new_token()
        expires = now + settings.access_ttl_s
        self.access[access] = AccessGrant(user_id=user_id, expires=expires)
        self.refresh[refresh] = RefreshGrant(user_id=user_id, expires=now + settings.refresh_ttl_s)
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires=int(expires),
            expires_in=int(settings.access_ttl_s),
            user_id=user_id,
        )

    def event_token(
        self, user_id: int, now: float, settings: OAuthSettings, new_token: TokenFactory
    ) -> tuple[str, int]:
        """An access token of ``user_id`` for an event's ``auth`` (no refresh token), and its
        remaining seconds: the last one given while more than half its lifetime is left."""
        token = self.event_tokens.get(user_id, "")
        grant = self.access.get(token)
        if grant is None or grant.expires - now <= settings.access_ttl_s / 2:
            self.prune(now)
            token = new_token()
            grant = AccessGrant(user_id=user_id, expires=now + settings.access_ttl_s)
            self.access[token] = grant
            self.event_tokens[user_id] = token
        return token, int(grant.expires - now)

    def authorize(
        self, user_id: int, now: float, settings: OAuthSettings, new_token: TokenFactory
    ) -> str:
        """An authorization code for ``user_id`` (``/oauth/authorize/``)."""
        self.prune(now)
        code = new_token()
        self.codes[code] = CodeGrant(user_id=user_id, expires=now + settings.code_ttl_s)
        return code

    def exchange(
        self, code: str, now: float, settings: OAuthSettings, new_token: TokenFactory
    ) -> TokenPair:
        """``grant_type=authorization_code``: the code, once and in time, for a pair."""
        grant = self.codes.get(code)
        if grant is None:
            raise OAuthError("invalid_grant", "Invalid authorization code")
        if grant.used:
            raise OAuthError("invalid_grant", "The authorization code has already been used")
        if grant.expires <= now:
            raise OAuthError("invalid_grant", "The authorization code has expired")
        grant.used = True
        return self.issue(grant.user_id, now, settings, new_token)

    def rotate(
        self, refresh_token: str, now: float, settings: OAuthSettings, new_token: TokenFactory
    ) -> TokenPair:
        """``grant_type=refresh_token``: a new pair; the refresh token given is used up."""
        grant = self.refresh.get(refresh_token)
        if grant is None:
            raise OAuthError("invalid_grant", "Invalid refresh token")
        if grant.used:
            raise OAuthError("invalid_grant", "The refresh token has already been used")
        if grant.expires <= now:
            raise OAuthError("invalid_grant", "The refresh token has expired")
        grant.used = True
        return self.issue(grant.user_id, now, settings, new_token)

    def check(self, access_token: str, now: float) -> AccessGrant:
        """The grant behind a valid access token, else `TokenError`."""
        grant = self.access.get(access_token)
        if grant is None:
            raise INVALID
        if grant.expires <= now:
            raise EXPIRED
        return grant

    def knows(self, token: str) -> bool:
        """Whether ``token`` is one of this book's access, refresh tokens or codes."""
        return token in self.access or token in self.refresh or token in self.codes

    def revoke_all(self) -> int:
        """Forget every grant (the application was uninstalled); returns how many there were."""
        count = len(self.access) + len(self.refresh) + len(self.codes)
        self.access.clear()
        self.refresh.clear()
        self.codes.clear()
        self.event_tokens.clear()
        return count

    def prune(self, now: float) -> None:
        """Drop grants that can only be refused now: access tokens and codes a day past their
        expiry (until then a token still reads as expired rather than invalid) and expired
        refresh tokens."""
        for token in [t for t, g in self.access.items() if g.expires + DAY < now]:
            del self.access[token]
        for code in [c for c, g in self.codes.items() if g.expires + DAY < now]:
            del self.codes[code]
        for token in [t for t, g in self.refresh.items() if g.expires < now]:
            del self.refresh[token]
        self.event_tokens = {u: t for u, t in self.event_tokens.items() if t in self.access}
