"""Bitrix24 REST errors: one class per way a caller must react (docs/bitrix24-client.md,
Bitrix24 facts: errors).

- `TransientBitrix24Error`: try again later. `RateLimited` (503 `QUERY_LIMIT_EXCEEDED`),
  `OperationTimeLimit` (429 `OPERATION_TIME_LIMIT`, with `.reset_at`), `PortalUnavailable`
  (5xx, network failure, timeout: a write may or may not have happened).
- `PermanentBitrix24Error`: retrying cannot help (bad data, missing rights, a blocked or deleted
  portal). It is also a `shared.messaging.PermanentError`, so the consumer wrapper dead-letters it.

Every error carries `.code`, `.description`, `.status` (None when there is no HTTP status: a
command inside a batch, a network failure) and `.method`; none of them ever contains the webhook
URL.
"""

from __future__ import annotations

import re

from shared.logging import redact
from shared.messaging import DropMessage, PermanentError

_NOT_FOUND_TEXT = re.compile(r"\bnot\s+found\b", re.IGNORECASE)

# System codes that are never worth a retry whatever the HTTP status says (docs/bitrix24-client.md,
# Bitrix24 facts: errors): a manual block by Bitrix24 (OVERLOAD_LIMIT arrives as a 503 like the
# rate limit), a deleted portal (documented as 500), authorisation problems a webhook cannot fix
# by itself (it has no refresh token, so even `expired_token` is final here) and misuse of a
# method or of `batch`.
_PERMANENT_CODES = frozenset(
    {
        "OVERLOAD_LIMIT",
        "PORTAL_DELETED",
        "NO_AUTH_FOUND",
        "EXPIRED_TOKEN",
        "METHOD_CONFIRM_WAITING",
        "METHOD_CONFIRM_DENIED",
        "INSUFFICIENT_SCOPE",
        "INVALID_CREDENTIALS",
        "ACCESS_DENIED",
        "USER_ACCESS_ERROR",
        "WRONG_AUTH_TYPE",
        "ERROR_METHOD_NOT_FOUND",
        "INVALID_REQUEST",
        "ERROR_BATCH_LENGTH_EXCEEDED",
        "ERROR_BATCH_METHOD_NOT_ALLOWED",
    }
)
_OPERATION_TIME_CODES = frozenset({"OPERATION_TIME_LIMIT", "ERROR_OPERATION_TIME_LIMIT"})
# A command inside a batch has no HTTP status: these codes mark a server fault there.
_SERVER_FAULT_CODES = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"})


class Bitrix24Error(Exception):
    """An error answered by the portal (or the failure to get an answer) for one method."""

    def __init__(self, method: str, code: str, description: str, status: int | None) -> None:
        self.method = method
        self.code = code
        self.description = redact(description)
        self.status = status
        super().__init__(self._message())

    def _message(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.method}: {self.code or '(no code)'}: {self.description}{status}"


class TransientBitrix24Error(Bitrix24Error):
    """Retry later: the portal refused or failed this time, not for good."""


class RateLimited(TransientBitrix24Error):  # noqa: N818 - the name other services code against
    """503 `QUERY_LIMIT_EXCEEDED`: the portal's leaky bucket was full; the request was rejected."""


class OperationTimeLimit(TransientBitrix24Error):  # noqa: N818 - as above
    """429 `OPERATION_TIME_LIMIT`: this method used up its execution time; others still work.

    `reset_at` (Unix time) is when calling the method again makes sense; None when unknown.
    """

    def __init__(
        self,
        method: str,
        code: str,
        description: str,
        status: int | None,
        reset_at: float | None = None,
    ) -> None:
        self.reset_at = reset_at
        super().__init__(method, code, description, status)

    def _message(self) -> str:
        base = super()._message()
        return base if self.reset_at is None else f"{base}; parked until {self.reset_at:.0f}"


class PortalUnavailable(TransientBitrix24Error):  # noqa: N818 - as above
    """A 5xx, a network failure or a timeout: for a write, the outcome is uncertain."""


class PermanentBitrix24Error(Bitrix24Error, PermanentError):
    """Retrying cannot help (4xx, authorisation, a blocked or deleted portal): dead-letter it."""


class PortalNotInstalled(PermanentBitrix24Error, DropMessage):  # noqa: N818 - as above
    """The application has no working tokens for this portal: never installed, uninstalled, or
    revoked (the OAuth server refused its refresh token; `PortalRevoked`). Only an install (a new
    one, by the portal's administrator) brings tokens again. A consumer drops the message it
    was working on (`DropMessage`): that portal's work has stopped."""

    def __init__(self, member_id: str, status: str, description: str) -> None:
        self.member_id = member_id
        self.portal_status = status
        super().__init__("oauth", status, description, None)


class PortalRevoked(PortalNotInstalled):
    """The OAuth server refused the portal's refresh token (`invalid_grant`): the portal is marked
    `revoked` and is called no more until the application is installed on it again."""


class NotFound(PermanentBitrix24Error):  # noqa: N818 - as above
    """The entity does not exist (Bitrix24 answers 400 `NOT_FOUND`, or an empty code and
    "Not found" from the legacy `crm.*` methods)."""


def classify(
    method: str,
    code: str,
    description: str,
    status: int | None,
    reset_at: float | None = None,
) -> Bitrix24Error:
    """The error for a Bitrix24 `error`/`error_description` pair (codes compared ignoring case).

    `status` is the HTTP status, or None for a command's entry in a batch's `result_error`.
    The first matching row of the table below decides.
    """
    upper = code.strip().upper()
    not_found = upper == "NOT_FOUND" or (not upper and bool(_NOT_FOUND_TEXT.search(description)))
    server_fault = (status is not None and status >= 500) or (
        status is None and upper in _SERVER_FAULT_CODES
    )
    table: tuple[tuple[bool, type[Bitrix24Error]], ...] = (
        (upper == "QUERY_LIMIT_EXCEEDED", RateLimited),
        (upper in _OPERATION_TIME_CODES or status == 429, OperationTimeLimit),
        (upper in _PERMANENT_CODES, PermanentBitrix24Error),
        (not_found, NotFound),
        (server_fault, PortalUnavailable),
    )
    kind = next((kind for matched, kind in table if matched), PermanentBitrix24Error)
    if kind is OperationTimeLimit:
        return OperationTimeLimit(method, code, description, status, reset_at)
    return kind(method, code, description, status)
