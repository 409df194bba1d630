"""Transactional outbox: events written in the same transaction as the state that caused them,
published by a relay once the broker takes them (DESIGN §4: with RabbitMQ down, nothing is lost).

Any number of relays may run (one per service process): `FOR UPDATE SKIP LOCKED` hands each row
to one of them; a crash between publish and delete republishes the same `message_id`, which
consumers drop as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

import asyncpg
from aiormq.exceptions import PublishError
from asyncpg.pool import PoolConnectionProxy
from faststream.rabbit import RabbitBroker

from shared.events import Event
from shared.logging import get_logger
from shared.messaging import publish_json

CHANNEL = "nps_outbox"
log = get_logger(__name__)


async def enqueue(conn: asyncpg.Connection | PoolConnectionProxy, events: Sequence[Event]) -> None:
    """Add `events` to the outbox inside the caller's transaction (duplicates are ignored)."""
    if not events:
        return
    await conn.executemany(
        """INSERT INTO outbox (message_id, routing_key, correlation_id, body)
           VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (message_id) DO NOTHING""",
        [(e.event_id, e.routing_key(), e.correlation_id, e.model_dump_json()) for e in events],
    )
    await conn.execute(f"NOTIFY {CHANNEL}")


async def claim(
    conn: asyncpg.Connection | PoolConnectionProxy, consumer: str, message_id: str
) -> bool:
    """Record that `consumer` handles `message_id`; False when it already did (a redelivery)."""
    row = await conn.fetchval(
        """INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2::uuid)
           ON CONFLICT DO NOTHING RETURNING 1""",
        consumer,
        message_id,
    )
    return row is not None


class OutboxRelay:
    """Publishes pending outbox rows; woken by NOTIFY, polling as a fallback."""

    def __init__(
        self, pool: asyncpg.Pool, broker: RabbitBroker, batch: int = 200, poll_s: float = 1.0
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._batch = batch
        self._poll_s = poll_s
        self._wake = asyncio.Event()

    async def publish_pending(self) -> tuple[int, bool]:
        """Publish one batch of pending rows: (how many were published, whether one failed)."""
        published = 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, message_id, routing_key, correlation_id, body FROM outbox
                   WHERE published_at IS NULL AND next_attempt_at <= now()
                   ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch,
            )
            for row in rows:
                try:
                    await publish_json(
                        self._broker,
                        json.loads(row["body"]),
                        routing_key=row["routing_key"],
                        message_id=str(row["message_id"]),
                        correlation_id=row["correlation_id"],
                    )
                except PublishError as exc:
                    # Returned by the broker: no queue takes this routing key. Only this row waits.
                    await conn.execute(
                        """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                               next_attempt_at = now() + make_interval(
                                   secs => least(600, 2 ^ least(attempts + 1, 10)))
                           WHERE id = $1""",
                        row["id"],
                        f"unroutable: {exc}"[:1000],
                    )
                    log.error("outbox_unroutable", routing_key=row["routing_key"], error=str(exc))
                    continue
                except Exception as exc:
                    await conn.execute(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                        row["id"],
                        f"{type(exc).__name__}: {exc}"[:1000],
                    )
                    log.warning(
                        "outbox_publish_failed", routing_key=row["routing_key"], error=str(exc)
                    )
                    return published, True
                await conn.execute("DELETE FROM outbox WHERE id = $1", row["id"])
                published += 1
        return published, False

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled; survives broker and database outages with growing pauses."""
        failures = 0
        while True:
            try:
                async with self._pool.acquire() as listener:
                    await listener.add_listener(CHANNEL, self._notified)
                    try:
                        failures = await self._relay_loop(failures)
                    finally:
                        await listener.remove_listener(CHANNEL, self._notified)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("outbox_relay_error", error=str(exc), failures=failures)
                await asyncio.sleep(_backoff(failures))

    async def _relay_loop(self, failures: int) -> int:
        while True:
            self._wake.clear()
            count, failed = await self.publish_pending()
            if failed:
                failures += 1
                await asyncio.sleep(_backoff(failures))
                continue
            failures = 0
            if count < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)


def _backoff(failures: int) -> float:
    return float(min(30.0, 0.25 * 2 ** min(failures, 7)))
