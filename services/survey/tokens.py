"""Personal survey links: signed, expiring tokens that carry only a random request id (pure).

A token is an itsdangerous URL-safe timed signature of the request id: nothing personal, nothing
to enumerate, nothing to forge without a key. Keys rotate: the first key signs, every key
verifies (`SURVEY_KEYS`). Signatures are compared in constant time by itsdangerous.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

LINK_SALT = "b24-nps.survey-link"
FORM_SALT = "b24-nps.survey-form"
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class LinkCheck:
    """What a token turned out to be: `valid` with its request id, `expired`, or `invalid`."""

    status: Literal["valid", "expired", "invalid"]
    request_id: uuid.UUID | None = None


def _serializer(
    keys: Sequence[str], salt: str, clock: Callable[[], float]
) -> URLSafeTimedSerializer:
    if not keys:
        raise ValueError("at least one signing key is needed")

    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    # itsdangerous signs with the last key of the list and verifies with any.
    return URLSafeTimedSerializer(
        list(reversed(keys)),
        salt=salt,
        signer=ClockSigner,
        signer_kwargs={"digest_method": hashlib.sha256},
    )


@dataclass(frozen=True)
class IssuedLink:
    """A token just signed and the moment it stops working."""

    token: str
    expires_at: datetime


class LinkSigner:
    """Signs request ids into link tokens and checks tokens back."""

    def __init__(
        self, keys: Sequence[str], max_age_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._links = _serializer(keys, LINK_SALT, clock)
        self._forms = _serializer(keys, FORM_SALT, clock)
        self._max_age_s = max_age_s

    def sign(self, request_id: uuid.UUID) -> str:
        return str(self._links.dumps(request_id.hex))

    def issue(self, request_id: uuid.UUID) -> IssuedLink:
        """A token for `request_id` with its expiry: the signing time it carries plus the
        links' maximum age."""
        token = self.sign(request_id)
        _payload, signed_at = self._links.loads(token, return_timestamp=True)
        return IssuedLink(token, signed_at + timedelta(seconds=self._max_age_s))

    def check(self, token: str) -> LinkCheck:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return LinkCheck("invalid")
        try:
            payload = self._links.loads(token, max_age=self._max_age_s)
        except SignatureExpired:
            return LinkCheck("expired")
        except BadData:
            return LinkCheck("invalid")
        try:
            return LinkCheck("valid", uuid.UUID(hex=str(payload)))
        except ValueError:
            return LinkCheck("invalid")

    def form_token(self, request_id: uuid.UUID, nonce: str) -> str:
        """The CSRF field of a form for `request_id`, bound to the browser's `nonce` cookie."""
        return str(self._forms.dumps([request_id.hex, nonce]))

    def form_token_valid(self, token: str, request_id: uuid.UUID, nonce: str) -> bool:
        """Whether `token` was issued for this request and this browser's cookie."""
        if not token or not nonce or len(token) > MAX_TOKEN_LENGTH * 2:
            return False
        try:
            payload = self._forms.loads(token, max_age=self._max_age_s)
        except BadData:
            return False
        return bool(payload == [request_id.hex, nonce])
