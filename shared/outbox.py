"""Transactional outbox: events written in the same transaction as the state that caused them,
published by a relay once the broker takes them: with RabbitMQ down, nothing is lost
(docs/architecture.md, The outbox).

Any number of relays may run (one per service process): `FOR UPDATE SKIP LOCKED` hands each row
to one of them; a crash between publish and delete republishes the same `message_id`, which
consumers drop as a duplicate. A relay publishes as soon as a `transaction()` of its own process
that enqueued something commits, and polls every second for the rest (rows another process left
behind, rows enqueued outside `transaction()`, rows waiting out a back-off). No LISTEN/NOTIFY:
waking every service's relay for every row cost more round trips than the rows themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence

import asyncpg
from aiormq.exceptions import PublishError
from asyncpg.pool import PoolConnectionProxy
from faststream.rabbit import RabbitBroker

from shared.db import Conn
from shared.events import Event
from shared.logging import get_logger
from shared.messaging import publish_json

log = get_logger(__name__)

_RUNNING: set[OutboxRelay] = set()
"""The relays running in this process (see `committed`)."""


def _insert(first_param: int, after: str | None = None) -> str:
    p = first_param
    when = f"WHERE EXISTS (SELECT 1 FROM {after})" if after else ""  # noqa: S608 - a CTE name
    return f"""INSERT INTO outbox (message_id, routing_key, correlation_id, body)
        SELECT * FROM unnest(${p}::uuid[], ${p + 1}::text[], ${p + 2}::text[], ${p + 3}::jsonb[])
        {when}
        ON CONFLICT (message_id) DO NOTHING"""  # noqa: S608 - parameters only, no values


def events_params(events: Sequence[Event]) -> tuple[list[object], ...]:
    """The four array parameters of `queue_all`'s CTE (and `enqueue`) for `events`."""
    return (
        [e.event_id for e in events],
        [e.routing_key() for e in events],
        [e.correlation_id for e in events],
        [e.model_dump_json() for e in events],
    )


def queue_all(first_param: int, after: str | None = None) -> str:
    """SQL of a CTE `queued` that adds a list of events (in order) to the outbox, for statements
    that do their work and queue its events in one go; with `after`, only when the CTE of that
    name returns a row. Its four array parameters start at `$first_param`; pass
    `events_params(events)` for them."""
    return f"queued AS ({_insert(first_param, after)})"


async def enqueue(conn: Conn, events: Sequence[Event]) -> None:
    """Add `events` to the outbox inside the caller's transaction (duplicates are ignored)."""
    if events:
        await conn.execute(_insert(1), *events_params(events))


async def enqueue_with(
    conn: Conn,
    statement: str,
    args: Sequence[object],
    event: Event,
) -> bool:
    """Run `statement` (a data-modifying statement with a RETURNING clause) and add `event` to
    the outbox when it returned a row: one statement, so atomic without a transaction and one
    round trip. False when it returned nothing (and nothing was queued). Outside a transaction
    the relays are woken at once."""
    queued = await conn.fetchval(
        f"""WITH cause AS ({statement}), {queue_all(len(args) + 1, after="cause")}
            SELECT EXISTS (SELECT 1 FROM cause)""",  # noqa: S608 - our own statement text
        *args,
        *events_params([event]),
    )
    if queued:
        committed(conn)
    return bool(queued)


def committed(conn: Conn) -> None:
    """Call after a statement or transaction that queued events: unless an outer transaction
    still holds them, this process's relays publish them now rather than at their next poll."""
    if not conn.is_in_transaction():
        for relay in _RUNNING:
            relay.wake()


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy]:
    """A pooled connection in a transaction; what it enqueued is published as soon as it
    commits."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            yield conn
        committed(conn)


class OutboxRelay:
    """Publishes pending outbox rows, a batch at a time with the confirms awaited together."""

    def __init__(
        self, pool: asyncpg.Pool, broker: RabbitBroker, batch: int = 200, poll_s: float = 1.0
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._batch = batch
        self._poll_s = poll_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Rows were committed: publish now."""
        self._wake.set()

    async def _publish(self, row: asyncpg.Record) -> None:
        await publish_json(
            self._broker,
            json.loads(row["body"]),
            routing_key=row["routing_key"],
            message_id=str(row["message_id"]),
            correlation_id=row["correlation_id"],
        )

    async def publish_pending(self) -> tuple[int, bool]:
        """Publish one batch of pending rows: (how many were published, whether any failed).

        A row the broker returns (no queue takes its routing key) waits with a growing back-off
        and holds up nothing else; any other failure leaves the row for the next round."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, message_id, routing_key, correlation_id, body FROM outbox
                   WHERE published_at IS NULL AND next_attempt_at <= now()
                   ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch,
            )
            if not rows:
                return 0, False
            results = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            sent: list[int] = []
            unroutable: list[tuple[int, str]] = []
            failed: list[tuple[int, str]] = []
            for row, result in zip(rows, results, strict=True):
                if result is None:
                    sent.append(row["id"])
                elif isinstance(result, PublishError):
                    unroutable.append((row["id"], f"unroutable: {result}"[:1000]))
                    log.error(
                        "outbox_unroutable", routing_key=row["routing_key"], error=str(result)
                    )
                elif isinstance(result, Exception):
                    failed.append((row["id"], f"{type(result).__name__}: {result}"[:1000]))
                else:
                    raise result
            if sent:
                await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", sent)
            if unroutable:
                await conn.executemany(
                    """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                           next_attempt_at = now() + make_interval(
                               secs => least(600, 2 ^ least(attempts + 1, 10)))
                       WHERE id = $1""",
                    unroutable,
                )
            if failed:
                await conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                    failed,
                )
                log.warning("outbox_publish_failed", rows=len(failed), error=failed[0][1])
        return len(sent), bool(failed)

    async def run(self) -> None:
        """Relay until cancelled; survives broker and database outages with growing pauses."""
        _RUNNING.add(self)
        failures = 0
        try:
            while True:
                self._wake.clear()
                try:
                    count, failed = await self.publish_pending()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    count, failed = 0, True
                    log.warning("outbox_relay_error", error=str(exc), failures=failures + 1)
                if failed:
                    failures += 1
                    await asyncio.sleep(_backoff(failures))
                    continue
                failures = 0
                if count < self._batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
        finally:
            _RUNNING.discard(self)


def _backoff(failures: int) -> float:
    return float(min(30.0, 0.25 * 2 ** min(failures, 7)))
