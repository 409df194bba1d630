"""The session of the dashboard inside a Bitrix24 portal (pure): who opened it, on which portal.

When a user opens the application in the portal, the frame entry (`frame.py`) checks the portal
and the user's token, then issues a session: an itsdangerous URL-safe timed signature of
(member_id, user id, administrator or not, a random nonce). It travels **in the URL** (`?s=…` on
every link, a hidden field in every form), not in a cookie: the dashboard runs in an iframe of
the portal's domain, where browsers drop or block third-party cookies. It lasts
`FRAME_SESSION_TTL_S`; opening the application again issues a new one.

A session is a signature, not a secret store: it holds no token of the user's, only who they
are, so a leaked address lets its holder read that portal's dashboard until it expires (the
pages send `Referrer-Policy: no-referrer`, so it does not leak through links). The settings
form also carries a CSRF token: a signature of the session's nonce under another salt.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

SESSION_PARAM = "s"
"""The query parameter (and form field) that carries the session."""
FRAME_SESSION_TTL_S = 30 * 60
"""How long a frame session lasts (the portal's user token itself lasts an hour)."""
MAX_SESSION_LENGTH = 400
_SESSION_SALT = "b24-nps.frame-session"
_CSRF_SALT = "b24-nps.frame-csrf"


@dataclass(frozen=True)
class FrameUser:
    """Who a frame session belongs to."""

    member_id: str
    """The portal: every page, CSV and API read of the session reads this portal only."""
    user_id: int
    admin: bool
    """A portal administrator (`profile`'s `ADMIN` for the user's own token): may save the
    settings."""
    nonce: str
    """Random per session; the settings form's CSRF token signs it."""


class FrameSessions:
    """Issues and reads frame sessions and their CSRF tokens, signed with `secret`."""

    def __init__(
        self,
        secret: str,
        *,
        ttl_s: int = FRAME_SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("a frame session needs a signing secret")

        class ClockSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        def serializer(salt: str) -> URLSafeTimedSerializer:
            return URLSafeTimedSerializer(
                secret,
                salt=salt,
                signer=ClockSigner,
                signer_kwargs={"digest_method": hashlib.sha256},
            )

        self._sessions = serializer(_SESSION_SALT)
        self._csrf = serializer(_CSRF_SALT)
        self.ttl_s = ttl_s

    def issue(self, member_id: str, user_id: int, *, admin: bool) -> str:
        """A new session of `user_id` on portal `member_id`."""
        payload = {"m": member_id, "u": user_id, "a": admin, "n": secrets.token_urlsafe(12)}
        return str(self._sessions.dumps(payload))

    def read(self, token: str) -> FrameUser | None:
        """The session's user; None when `token` is forged, damaged or expired."""
        if not token or len(token) > MAX_SESSION_LENGTH:
            return None
        try:
            payload = self._sessions.loads(token, max_age=self.ttl_s)
        except BadData:
            return None
        if not isinstance(payload, dict):
            return None
        member_id, user_id = payload.get("m"), payload.get("u")
        admin, nonce = payload.get("a"), payload.get("n")
        if not (
            isinstance(member_id, str)
            and member_id
            and isinstance(user_id, int)
            and isinstance(admin, bool)
            and isinstance(nonce, str)
        ):
            return None
        return FrameUser(member_id, user_id, admin, nonce)

    def csrf(self, user: FrameUser) -> str:
        """The CSRF token of `user`'s session, for its forms."""
        return str(self._csrf.dumps(user.nonce))

    def csrf_matches(self, user: FrameUser, given: str | None) -> bool:
        """True when `given` is the CSRF token of `user`'s session (and not expired)."""
        if not given or len(given) > MAX_SESSION_LENGTH:
            return False
        try:
            nonce = self._csrf.loads(given, max_age=self.ttl_s)
        except BadData:
            return False
        return isinstance(nonce, str) and secrets.compare_digest(nonce, user.nonce)
