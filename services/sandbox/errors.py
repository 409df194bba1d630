"""The Bitrix24 error shape: an HTTP status plus ``{"error": ..., "error_description": ...}``."""

from collections.abc import Mapping
from typing import Any


class RestError(Exception):
    """A method-level or system error, answered with ``status`` and the Bitrix24 error body
    (``extra`` keys after the two, e.g. ``argument`` of an ``ERROR_ARGUMENT``)."""

    def __init__(
        self,
        status: int,
        code: str,
        description: str,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description, **self.extra}
