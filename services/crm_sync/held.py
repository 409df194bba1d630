"""Held queues (application mode, docs/crm_sync.md, Many portals): a portal at its ceiling does
not slow the others. What to decide is `fairness.py`; this module asks the portal's budget,
parks messages in RabbitMQ and drains them.

- `around(...)` is the consumer hook (`shared.messaging.subscribe(around=...)`) of a shared queue:
  a message of a portal whose budget would make it wait, or whose held queue is not empty yet,
  is published (persistent, confirmed) into `<queue>.portal.<member_id>` before the consumer
  acks it, so it never holds the consumer's slots and is never lost: a crash between the two
  leaves it twice, and the handler carries out each action, answer and command once whatever
  delivers it (`crm_actions`, the ledger, the item versions).
- The held queue is declared on demand (a durable quorum queue whose dead letters go to the
  shared queue's DLQ) and drained by a consumer of its own, on its own channel with the shared
  queue's prefetch: its messages wait there, in that portal's budget, and go through the same
  handler and the same retry policy (a retry goes back to the shared queue, a dead letter to its
  DLQ, where `nps dlq replay` finds it).
- At start (`recover`) every held queue an earlier run left for an installed portal is drained,
  empty or not (messages another process had in hand come back to it when that process stops);
  one left with messages is drained first, its pair held until it is empty.

In webhook mode (one portal) `around` returns None: nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractQueue
from faststream.rabbit import QueueType, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.schemas.queue import QuorumQueueArgs
from faststream.rabbit.subscriber import RabbitSubscriber
from prometheus_client import Counter, Gauge

from services.crm_sync.fairness import (
    HANDLE,
    Pair,
    drain_done,
    drain_started,
    held_queue,
    needs_budget,
    on_arrival,
    on_size,
    park_done,
    recovered,
)
from shared.bitrix24 import RateBudget
from shared.bitrix24.lanes import Lane
from shared.events import Event
from shared.logging import get_logger
from shared.messaging import Around, Handler, park, subscribe
from shared.service import Runtime
from shared.topology import DLX, QueueSpec

E = TypeVar("E", bound=Event)
PortalOf = Callable[[E], tuple[str, Lane]]
"""A message's portal key and the lane its request asks the budget in."""

HELD = Counter(
    "nps_crm_sync_held_total",
    "Messages set aside in their portal's held queue (the portal at its ceiling) instead of "
    "holding crm_sync's consumer, by shared queue",
    ["queue"],
)
PORTALS_HELD = Gauge(
    "nps_crm_sync_portals_held",
    "Portals whose messages this process sets aside in held queues (at their ceiling)",
)

log = get_logger(__name__)

LOOKUP_TIMEOUT_S = 60.0
"""The most one look for held queues may take (`HeldQueues.watch`)."""


@dataclass
class _Gate:
    spec: QueueSpec
    model: type[Any]
    handler: Handler[Any]
    prefetch: int


class HeldQueues:
    """The held queues of one crm_sync process; see the module docstring."""

    def __init__(
        self,
        broker: RabbitBroker,
        budget_of: Callable[[str], Awaitable[RateBudget]] | None,
        *,
        amqp_url: str,
        max_attempts: int,
        served: Callable[[], tuple[str, ...]],
    ) -> None:
        self._broker = broker
        self._budget_of = budget_of
        self._amqp_url = amqp_url
        self._max_attempts = max_attempts
        self._served = served
        self._gates: dict[str, _Gate] = {}
        self._pairs: dict[tuple[str, str], Pair] = {}
        self._drains: set[tuple[str, str]] = set()
        """The pairs whose held queue this process drains (from their first hold on), once
        their drain is set up."""
        self._subscribers: dict[tuple[str, str], RabbitSubscriber] = {}
        """Each drain, kept here: the broker keeps a held queue's subscriber (not persistent)
        only weakly, so a garbage collection would otherwise take it."""
        self._queues: dict[tuple[str, str], AbstractQueue] = {}
        self._starting: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    def of(cls, runtime: Runtime) -> HeldQueues:
        """The held queues of a service's runtime: active in application mode only."""
        budget_of = None
        if runtime.portals is not None:
            clients = runtime.portal_clients()

            async def budget(key: str) -> RateBudget:
                await runtime.ensure_portal(key)
                return clients.get(key).budget

            budget_of = budget
        portals = runtime.portals
        return cls(
            runtime.broker,
            budget_of,
            amqp_url=runtime.settings.rabbitmq_url.get_secret_value(),
            max_attempts=runtime.settings.retry_max_attempts,
            served=tuple if portals is None else portals.served,
        )

    def around(
        self,
        spec: QueueSpec,
        model: type[E],
        handler: Handler[E],
        portal_of: PortalOf[E],
        *,
        prefetch: int,
    ) -> Around[E] | None:
        """The consumer hook of `spec` (None in webhook mode); held queues of it are drained
        with `handler`, `prefetch` messages at a time on a channel of their own."""
        if self._budget_of is None:
            return None
        self._gates[spec.name] = _Gate(spec, model, handler, prefetch)
        budget_of = self._budget_of

        async def gate(event: E, message: RabbitMessage, handle: Handler[E]) -> None:
            key, lane = portal_of(event)
            pair_key = (spec.name, key)
            wait: float | None = None
            if needs_budget(self._pairs.get(pair_key, Pair())):
                budget = await budget_of(key)
                try:
                    wait = await budget.room(lane)
                except Exception as exc:  # the budget's database: the handler will say
                    log.warning("crm_sync_budget_room_unknown", error=str(exc))
            before = self._pairs.get(pair_key, Pair())
            decision, after = on_arrival(before, wait)
            if decision == HANDLE:
                await handle(event)
                return
            self._set(pair_key, after)
            if not before.held:
                log.info("crm_sync_portal_held", portal=key, queue=spec.name, wait_s=wait)
            parked = False
            try:
                await self._start_drain(spec.name, key)
                await park(self._broker, message, held_queue(spec.name, key))
                parked = True
            finally:
                pair, ask = park_done(self._pairs[pair_key], parked)
                self._set(pair_key, pair)
                if ask:
                    await self._maybe_open(spec.name, key)
            HELD.labels(queue=spec.name).inc()

        return gate

    async def recover(self) -> None:
        """Drain every held queue an earlier run left (the installed portals' of the gated
        queues), whatever it holds now: one left with messages holds its pair until it is empty;
        an empty one is drained all the same, as messages an earlier process (another replica
        in a rolling restart) had in hand come back to it when that process stops. Asked on a
        connection of its own, before the broker starts (a queue that does not exist closes the
        channel that asked)."""
        if not self._gates:
            return
        for queue, key, ready in await self._existing(self._undrained()):
            pair = recovered(ready)
            self._set((queue, key), pair)
            # Started with the broker.
            self._subscribers[(queue, key)] = self._subscribe_drain(queue, key)
            self._drains.add((queue, key))
            if pair.held:
                log.info("crm_sync_portal_held", portal=key, queue=queue, recovered=True)

    async def watch(self, interval_s: float, stop: asyncio.Event) -> None:
        """Every `interval_s`, drain the served portals' held queues this process does not
        drain that hold messages: parked by a replica that stopped (scaled down) before they
        were drained, or given back by one still stopping at this process' start. A failed look
        (the broker restarting, say) is logged and tried again next time: it never ends the
        service."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            if stop.is_set() or not self._gates:
                return
            try:
                await asyncio.wait_for(self._drain_found(), timeout=LOOKUP_TIMEOUT_S)
            except Exception as exc:  # any broker failure: the next look tries again
                log.warning("crm_sync_held_lookup_failed", error=type(exc).__name__)

    async def _drain_found(self) -> None:
        for queue, key, ready in await self._existing(self._undrained()):
            if ready and (queue, key) not in self._drains:
                self._set((queue, key), recovered(ready))
                await self._start_drain(queue, key)
                log.info("crm_sync_portal_held", portal=key, queue=queue, found=True)

    def _undrained(self) -> list[tuple[str, str]]:
        """The (queue, portal) pairs of the served portals this process drains no held queue of."""
        return [
            (queue, key)
            for queue in self._gates
            for key in self._served()
            if (queue, key) not in self._drains
        ]

    async def _existing(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
        """The held queues of `pairs` that exist, with their ready messages; asked on a
        connection of its own (a queue that does not exist closes the channel that asked)."""
        found: list[tuple[str, str, int]] = []
        if not pairs:
            return found
        connection = await aio_pika.connect_robust(self._amqp_url)
        async with connection:
            for queue, key in pairs:
                channel = await connection.channel()
                try:
                    held = await channel.declare_queue(held_queue(queue, key), passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    continue
                found.append((queue, key, held.declaration_result.message_count or 0))
                await channel.close()
        return found

    def _set(self, pair_key: tuple[str, str], pair: Pair) -> None:
        self._pairs[pair_key] = pair
        PORTALS_HELD.set(len({key for (_queue, key), p in self._pairs.items() if p.held}))

    async def _start_drain(self, queue: str, key: str) -> None:
        """Declare the held queue and start its drain, once per process."""
        pair_key = (queue, key)
        if pair_key in self._drains:
            return
        async with self._starting.setdefault(pair_key, asyncio.Lock()):
            if pair_key in self._drains:
                return
            await self._declared(queue, key)
            subscriber = self._subscribers[pair_key] = self._subscribe_drain(queue, key)
            await subscriber.start()
            self._drains.add(pair_key)

    async def _declared(self, queue: str, key: str) -> AbstractQueue:
        """The held queue, declared (idempotent; once per process)."""
        found = self._queues.get((queue, key))
        if found is None:
            # Quorum like every queue here; what the broker dead-letters goes to the shared
            # queue's DLQ.
            arguments: QuorumQueueArgs = {
                "x-dead-letter-exchange": DLX,
                "x-dead-letter-routing-key": queue,
            }
            found = self._queues[(queue, key)] = await self._broker.declare_queue(
                RabbitQueue(
                    held_queue(queue, key), QueueType.QUORUM, durable=True, arguments=arguments
                )
            )
        return found

    def _subscribe_drain(self, queue: str, key: str) -> RabbitSubscriber:
        gate = self._gates[queue]
        pair_key = (queue, key)

        async def drained(event: Event) -> None:
            self._set(pair_key, drain_started(self._pairs.get(pair_key, Pair(held=True))))
            try:
                await gate.handler(event)
            finally:
                pair, ask = drain_done(self._pairs[pair_key])
                self._set(pair_key, pair)
                if ask:
                    await self._maybe_open(queue, key)

        return subscribe(
            self._broker,
            gate.spec,
            gate.model,
            drained,
            max_attempts=self._max_attempts,
            prefetch=gate.prefetch,
            source=held_queue(queue, key),
        )

    async def _maybe_open(self, queue: str, key: str) -> None:
        """Ask the held queue's size; an empty one opens the pair."""
        pair_key = (queue, key)
        try:
            result = await (await self._declared(queue, key)).declare()
        except Exception as exc:  # asked again after the next message
            log.warning("crm_sync_held_size_unknown", portal=key, queue=queue, error=str(exc))
            return
        pair, opened = on_size(self._pairs[pair_key], result.message_count or 0)
        self._set(pair_key, pair)
        if opened:
            log.info("crm_sync_portal_released", portal=key, queue=queue)
