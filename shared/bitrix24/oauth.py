"""The pure side of a Bitrix24 application's tokens (docs/app.md): the OAuth server's answers,
what its refusals mean, and when an access token is due for a refresh. No I/O here; the adapter
is `tokens.py`.

Facts (bitrix24/b24restdocs `settings/oauth/index.md`, `auto-renewal.md`, `error-codes.md`): the
token endpoint answers `{access_token, refresh_token, expires_in, expires, member_id,
client_endpoint, server_endpoint, scope, status, domain, user_id}`, where `domain` is the OAuth
server's, not the portal's; an access token lives an hour, a refresh token 180 days and is used
up by a refresh (each refresh returns a new one); `invalid_grant` is a refresh token expired,
used or revoked, `invalid_client` a wrong client id or secret, `PAYMENT_REQUIRED` an unpaid
application. The docs advise refreshing when a call answers `expired_token`, not before every
call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class AnswerError(ValueError):
    """An OAuth server answer that lacks a field or holds one of the wrong type."""

    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"the OAuth server's answer: {field}: expected {expected}")


@dataclass(frozen=True)
class TokenPair:
    """An access token with its refresh token, for one portal. The tokens never show in a repr."""

    access_token: str
    refresh_token: str
    expires_at: float
    """Unix time the access token stops working."""
    member_id: str
    client_endpoint: str
    """The portal's REST root (`https://<portal>/rest/`), where calls with the token go."""
    scope: str

    def __repr__(self) -> str:
        return f"TokenPair(member_id={self.member_id!r}, expires_at={self.expires_at:.0f})"


class Refusal(Enum):
    """What a refusal of the token endpoint means for the portal."""

    REVOKED = "revoked"
    """The refresh token is spent, expired or revoked: only a new install brings a new one."""
    CLIENT = "client"
    """The client id or secret is wrong (or the application is gone): a configuration problem."""
    PAYMENT = "payment"
    """The application's paid or trial period is over on that portal."""
    TRANSIENT = "transient"
    """The server failed or answered nonsense this time: try again later."""
    OTHER = "other"
    """Any other refusal: retrying the same request cannot help."""


def refusal(status: int, code: str) -> Refusal:
    """What the token endpoint's HTTP `status` and `error` `code` (compared ignoring case) mean."""
    upper = code.strip().upper()
    if upper == "INVALID_GRANT":
        return Refusal.REVOKED
    if upper == "INVALID_CLIENT":
        return Refusal.CLIENT
    if upper == "PAYMENT_REQUIRED" or status == 402:
        return Refusal.PAYMENT
    if status >= 500 or status == 429:
        return Refusal.TRANSIENT
    return Refusal.OTHER


def _text(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value.strip():
        raise AnswerError(field, "a non-empty string")
    return value.strip()


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise AnswerError(field, "a number of seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    raise AnswerError(field, "a number of seconds")


def expiry(expires_in: Any, now: float, field: str = "expires_in") -> float:
    """The Unix time a token given `expires_in` seconds at `now` expires (a positive number)."""
    seconds = _seconds(expires_in, field)
    if seconds <= 0:
        raise AnswerError(field, "a positive number of seconds")
    return now + seconds


def parse_token_answer(data: Mapping[str, Any], now: float) -> TokenPair:
    """The pair in a successful answer of the token endpoint received at `now`.

    The expiry counts from `now` (`expires_in`), not from the server's `expires`: a clock apart
    from the server's cannot make a token look valid longer than it is.
    """
    endpoint = _text(data, "client_endpoint")
    if not endpoint.startswith(("https://", "http://")):
        raise AnswerError("client_endpoint", "an http(s) URL")
    scope = data.get("scope", "")
    return TokenPair(
        access_token=_text(data, "access_token"),
        refresh_token=_text(data, "refresh_token"),
        expires_at=expiry(data.get("expires_in"), now),
        member_id=_text(data, "member_id"),
        client_endpoint=endpoint.rstrip("/") + "/",
        scope=scope if isinstance(scope, str) else "",
    )


def expired(expires_at: float, now: float) -> bool:
    """True when an access token expiring at `expires_at` is known to be dead at `now`: it is
    refreshed before use (a call with it would come back `expired_token`). Not earlier: the docs
    advise against refreshing ahead of need, and a margin longer than a short lifetime (the
    sandbox's tests use seconds) would refresh on every call."""
    return now >= expires_at
