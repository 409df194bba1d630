"""What the services' HTTP endpoints share when they read a request."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request


async def read_body(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body, refused with `too_large()` as soon as it grows past `limit` bytes (whatever
    Content-Length said): a larger one is never read into memory whole."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)
