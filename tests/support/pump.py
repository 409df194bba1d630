"""The broker for tests that play it: each event queued in the outbox, oldest first, handed once
to the handler its routing key names; the events no handler takes are kept by routing key."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


def _body(raw: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return body


@dataclass
class Pump:
    pool: asyncpg.Pool
    handlers: dict[str, Handler]
    seen: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    last: int = 0

    async def start(self) -> None:
        """Skip what earlier tests left in the outbox."""
        self.last = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")

    async def drain(self) -> int:
        """Hand every queued event to its handler; how many were handled."""
        handled_count = 0
        while True:
            rows = await self.pool.fetch(
                "SELECT id, routing_key, body FROM outbox WHERE id > $1 ORDER BY id LIMIT 500",
                self.last,
            )
            if not rows:
                return handled_count
            self.last = rows[-1]["id"]
            handled = [
                self.handlers[row["routing_key"]](row["routing_key"], _body(row["body"]))
                for row in rows
                if row["routing_key"] in self.handlers
            ]
            for row in rows:
                self.seen[row["routing_key"]].append(_body(row["body"]))
            handled_count += len(handled)
            await asyncio.gather(*handled)
