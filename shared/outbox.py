"""Transactional outbox: events written in the same transaction as the state that caused them,
published by a relay once the broker takes them: with RabbitMQ down, nothing is lost
(docs/architecture.md, The outbox).

Events are queued by the caller's own statement, built with `StatementBuilder`: the builder
numbers the statement's parameters (the caller asks for a placeholder per parameter and names it)
and adds the CTE that inserts the events, so the work and its events stay one statement; building
checks that every placeholder is used and no other one appears, and running checks that every
named parameter is given. Statements run through the process's `Outbox`: outside a transaction the
relays are woken as soon as the statement returns, inside one only when it commits, and only a
transaction opened by `Outbox.transaction` may queue (it knows when it commits; a rollback wakes
nobody).

Any number of relays may run (one per service process, registered on that process's `Outbox`):
`FOR UPDATE SKIP LOCKED` hands each row to one of them; a crash between publish and delete
republishes the same `message_id`, which consumers drop as a duplicate. A relay publishes as soon
as something its `Outbox` queued commits, and polls every second for the rest (rows another
process left behind, rows waiting out a back-off). No LISTEN/NOTIFY: waking every service's relay
for every row cost more round trips than the rows themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiormq.exceptions import PublishError
from faststream.rabbit import RabbitBroker

from shared.db import Conn
from shared.events import Event
from shared.logging import get_logger
from shared.messaging import publish_json

log = get_logger(__name__)

_EVENT_ARRAYS = ("message_id", "routing_key", "correlation_id", "body")
"""The array parameters a queuing statement takes for its events, in this order."""
_PLACEHOLDER = re.compile(r"\$(\d+)")


class OutboxUsageError(Exception):
    """A queuing statement built or run in a way that would lose events or wake-ups."""


def _events_params(events: Sequence[Event]) -> tuple[list[object], ...]:
    return (
        [e.event_id for e in events],
        [e.routing_key() for e in events],
        [e.correlation_id for e in events],
        [e.model_dump_json() for e in events],
    )


@dataclass(frozen=True)
class QueuingStatement:
    """A statement that does the caller's work and queues its events, built by
    `StatementBuilder`; run it with `Outbox.execute` or `Outbox.fetchval`."""

    sql: str
    slots: tuple[str | int, ...]
    """What each placeholder takes, in order: a caller's parameter by name, or (an int) one of
    the events' arrays."""
    queued_if: Callable[[Any], bool] | None = None
    """Whether the statement's value says it queued its events (None: it always does)."""

    def args(self, events: Sequence[Event], params: Mapping[str, object]) -> list[object]:
        """The statement's arguments, in placeholder order."""
        names = {slot for slot in self.slots if isinstance(slot, str)}
        if names != params.keys():
            missing = ", ".join(sorted(names - params.keys())) or "none"
            unknown = ", ".join(sorted(params.keys() - names)) or "none"
            raise OutboxUsageError(
                f"the statement takes parameters {', '.join(sorted(names)) or 'none'}: "
                f"missing {missing}, unknown {unknown}"
            )
        arrays = _events_params(events)
        return [arrays[slot] if isinstance(slot, int) else params[slot] for slot in self.slots]


class StatementBuilder:
    """Builds a `QueuingStatement`: ask for a placeholder per parameter (`param`), the CTE that
    queues the events (`queue`, once), then `build` the statement's text from them.

        b = StatementBuilder()
        item = b.param("item_id")
        statement = b.build(f"WITH done AS (UPDATE t SET x = 1 WHERE id = {item} RETURNING 1),"
                            f" {b.queue(after='done')} SELECT EXISTS (SELECT 1 FROM done)")
    """

    def __init__(self) -> None:
        self._slots: list[str | int] = []
        self._queue: str | None = None
        self._after: str | None = None

    def _placeholder(self, slot: str | int) -> str:
        self._slots.append(slot)
        return f"${len(self._slots)}"

    def param(self, name: str) -> str:
        """The placeholder of the caller's parameter `name` (given by name when run)."""
        if not name.isidentifier():
            raise OutboxUsageError(f"parameter name {name!r}: expected a Python identifier")
        if name in self._slots:
            raise OutboxUsageError(f"parameter {name!r} asked for twice: reuse its placeholder")
        return self._placeholder(name)

    def params(self, *names: str) -> tuple[str, ...]:
        """The placeholders of several parameters, in order."""
        return tuple(self.param(name) for name in names)

    def queue(self, after: str | None = None) -> str:
        """The CTE `queued`, adding the events (in order) to the outbox (duplicates are ignored);
        with `after`, only when the statement's CTE of that name returns a row."""
        if self._queue is not None:
            raise OutboxUsageError("queue() asked for twice: a statement queues its events once")
        ids, keys, correlations, bodies = (self._placeholder(i) for i in range(len(_EVENT_ARRAYS)))
        when = f"WHERE EXISTS (SELECT 1 FROM {after})" if after else ""  # noqa: S608 - a CTE name
        self._after = after
        self._queue = f"""queued AS (
    INSERT INTO outbox (message_id, routing_key, correlation_id, body)
    SELECT * FROM unnest({ids}::uuid[], {keys}::text[], {correlations}::text[], {bodies}::jsonb[])
    {when}
    ON CONFLICT (message_id) DO NOTHING)"""  # noqa: S608 - parameters only, no values
        return self._queue

    def build(
        self, sql: str, *, queued_if: Callable[[Any], bool] | None = None
    ) -> QueuingStatement:
        """The statement `sql`: it must hold the `queue()` CTE once and every placeholder asked
        for, and no other placeholder. A statement that queues only on a condition
        (`queue(after=...)`) says with `queued_if` how its value shows that it did, so that the
        relays are not woken for nothing."""
        if self._queue is None or sql.count(self._queue) != 1:
            raise OutboxUsageError("the statement must hold the queue() CTE exactly once")
        if self._after and not re.search(rf"\b{re.escape(self._after)}\s+AS\s*\(", sql, re.I):
            raise OutboxUsageError(f"queue(after={self._after!r}): the statement has no such CTE")
        used = {int(n) for n in _PLACEHOLDER.findall(sql)}
        asked = set(range(1, len(self._slots) + 1))
        if used != asked:
            unused = ", ".join(f"${n}" for n in sorted(asked - used)) or "none"
            foreign = ", ".join(f"${n}" for n in sorted(used - asked)) or "none"
            raise OutboxUsageError(
                f"placeholders: {unused} asked for but not used, {foreign} used but not asked for"
                " (take every placeholder from param())"
            )
        return QueuingStatement(sql, tuple(self._slots), queued_if)


def _enqueue_statement() -> QueuingStatement:
    b = StatementBuilder()
    return b.build(f"WITH {b.queue()} SELECT 1")


_ENQUEUE = _enqueue_statement()


@dataclass
class _Open:
    """A transaction opened by `Outbox.transaction`."""

    queued: bool = False


class Outbox:
    """A process's outbox: its relays (see `OutboxRelay.run`), woken when what this process
    queued commits, and the transactions it knows. One per process, passed to whatever queues
    (`Runtime.outbox` in a service's wiring)."""

    def __init__(self) -> None:
        self._relays: set[OutboxRelay] = set()
        self._open: dict[Conn, _Open] = {}
        """Connections in a transaction opened by `transaction`."""

    @contextlib.contextmanager
    def relaying(self, relay: OutboxRelay) -> Iterator[None]:
        """Wake `relay` while the block runs."""
        self._relays.add(relay)
        try:
            yield
        finally:
            self._relays.discard(relay)

    def _wake(self) -> None:
        for relay in self._relays:
            relay.wake()

    @contextlib.asynccontextmanager
    async def transaction(self, source: asyncpg.Pool | Conn) -> AsyncIterator[Conn]:
        """A transaction on a connection from `source` (a pool, or a connection not in a
        transaction); what it queued is published as soon as it commits. Within one of its own
        on the same connection, a savepoint: the outer transaction's commit wakes the relays."""
        if isinstance(source, asyncpg.Pool):
            async with source.acquire() as pooled, self.transaction(pooled) as conn:
                yield conn
            return
        conn = source
        if conn in self._open:
            async with conn.transaction():
                yield conn
            return
        if conn.is_in_transaction():
            raise OutboxUsageError(
                "the connection is in a transaction the outbox did not open: open it with "
                "Outbox.transaction() so that the relays are woken when it commits"
            )
        state = self._open[conn] = _Open()
        try:
            async with conn.transaction():
                yield conn
        finally:
            del self._open[conn]
        if state.queued:
            self._wake()

    async def fetchval(
        self,
        conn: Conn,
        statement: QueuingStatement,
        events: Sequence[Event],
        /,
        **params: object,
    ) -> Any:
        """Run `statement` with `params` (by name), queuing `events`; its first value."""
        args = statement.args(events, params)
        state = self._open.get(conn)
        if state is None and conn.is_in_transaction():
            raise OutboxUsageError(
                "events queued in a transaction the outbox did not open: open it with "
                "Outbox.transaction() so that the relays are woken when it commits"
            )
        value = await conn.fetchval(statement.sql, *args)
        if events and (statement.queued_if is None or statement.queued_if(value)):
            if state is None:
                self._wake()
            else:
                state.queued = True
        return value

    async def execute(
        self,
        conn: Conn,
        statement: QueuingStatement,
        events: Sequence[Event],
        /,
        **params: object,
    ) -> None:
        """Run `statement` with `params` (by name), queuing `events`."""
        await self.fetchval(conn, statement, events, **params)

    async def enqueue(self, conn: Conn, events: Sequence[Event]) -> None:
        """Add `events` to the outbox (duplicates are ignored), in a statement of their own."""
        if events:
            await self.execute(conn, _ENQUEUE, events)


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

    async def run(self, outbox: Outbox) -> None:
        """Relay until cancelled, woken by what `outbox` queued as soon as it commits; survives
        broker and database outages with growing pauses."""
        with outbox.relaying(self):
            await self._relay()

    async def _relay(self) -> None:
        failures = 0
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


def _backoff(failures: int) -> float:
    return float(min(30.0, 0.25 * 2 ** min(failures, 7)))
