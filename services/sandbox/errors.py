"""The Bitrix24 error shape: an HTTP status plus ``{"error": ..., "error_description": ...}``."""

from typing import Any


class RestError(Exception):
    """A method-level or system error, answered with ``status`` and the Bitrix24 error body."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description}
