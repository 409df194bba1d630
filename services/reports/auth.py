"""Who may read the reports: the holder of the reports token, presented one of three ways.

- `Authorization: Bearer <token>` (scripts, `curl`);
- HTTP basic auth with any user name and the token as the password (a browser's sign-in prompt);
- the `nps_reports` cookie, set by opening any page once with `?token=<token>`. The cookie holds
  an HMAC of the token, not the token, and changes when the token does.
Every comparison is constant-time. Without a token (`token=None`, only for in-process use) every
request is allowed; `nps run reports` always has one (see `main.py`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "nps_reports"
COOKIE_MAX_AGE_S = 7 * 24 * 3600
_COOKIE_CONTEXT = b"b24-nps reports cookie v1"


def cookie_value(token: str) -> str:
    """What the cookie holds for `token`: an HMAC of it, so the cookie never is the token."""
    return hmac.new(token.encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def basic_password(authorization: str) -> str | None:
    """The password of an `Authorization: Basic …` header; None when it is not one."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon else None


def bearer_token(authorization: str) -> str | None:
    scheme, _, given = authorization.partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class Access:
    """The reports token and the checks of what a request presents."""

    token: str

    def matches(self, given: str) -> bool:
        return secrets.compare_digest(given.encode(), self.token.encode())

    def allows(self, authorization: str | None, cookie: str | None) -> bool:
        """True when the header or the cookie proves the token."""
        if authorization:
            given = bearer_token(authorization) or basic_password(authorization)
            if given is not None and self.matches(given):
                return True
        return cookie is not None and secrets.compare_digest(
            cookie.encode(), cookie_value(self.token).encode()
        )
