"""Offline intake: ingest pulls the events of portals that cannot reach it (docs/ingest.md,
"Offline intake"; `INGEST_OFFLINE`).

The application binds ingest's events with `event_type=offline` at install (services/app), so the
portal queues them instead of posting them. For each served portal, on a schedule of its own:

1. A batch left by a puller that died before clearing it (its row in `ingest_offline_batches`,
   lease run out) is read again with its `process_id`; else `event.offline.get` with `clear=0`
   reserves up to 50 records under a new `process_id`, which is recorded before any of its
   events is stored.
2. Each record is stored through the webhook's own path (`offline_events.read_record`, then
   `store.record_received`: the `ingest_events` row and its `WebhookReceived` in the outbox in
   one statement, the same duplicate key as an online event), so a batch read twice stores each
   event once.
3. Records that cannot be read are reported with `event.offline.error`; then
   `event.offline.clear` with the `process_id`, and the batch's row goes.

A crash before the clear leaves the row: the batch is read again and its events dropped as
duplicates. A crash between the reservation and its row leaves a batch no row names: the
puller lists the reserved records (`event.offline.list`) when it starts and every
`ORPHAN_SCAN_S`, and adopts those batches. Two pullers (replicas) reserve disjoint batches;
a row is taken by one of them at a time (`store.claim_offline_batch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import Counter

from services.ingest import store
from services.ingest.offline_events import (
    BATCH_LIMIT,
    REFUSALS,
    Batch,
    BatchError,
    Round,
    Unreadable,
    next_wait,
    read_batch,
    read_record,
    refusal,
    round_of,
    unreadable_ids,
)
from services.ingest.webhook import Accepted, Ignored
from shared.bitrix24 import (
    Bitrix24Client,
    PermanentBitrix24Error,
    PortalNotInstalled,
    TransientBitrix24Error,
)
from shared.events import PortalRef, derived_id
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.portals import PortalClients, PortalConfigs, UnknownPortalError
from shared.served_portal import served_portal

LEASE_S = 120.0
"""How long a puller holds a batch it works on: another takes it only after that (a batch of 50
is stored and cleared in well under a second)."""
ORPHAN_SCAN_S = 600.0
"""How often a puller looks for reserved batches no row names."""
PARALLEL_PORTALS = 8
"""Portals pulled at the same time (each holds one database connection while it stores)."""

EVENTS = Counter(
    "nps_ingest_offline_events_total",
    "Offline events pulled, by outcome",
    ["outcome"],
)
PULLS = Counter(
    "nps_ingest_offline_pulls_total",
    "Pulls of a portal's offline queue, by outcome",
    ["outcome"],
)

log = get_logger(__name__)

Fault = Callable[[str], Awaitable[None]]
"""A test's fault hook, awaited at `reserved` (a batch reserved, its row not recorded yet) and
`stored` (its events stored, not cleared yet): raising there is a crash at that point."""


class OfflineUnavailableError(RuntimeError):
    """The portal refuses offline events for good in this deployment (an inbound webhook)."""


@dataclass(frozen=True)
class ServedOffline:
    """A portal to pull: its reference (stamped on its events), client and configuration."""

    portal: PortalRef
    client: Bitrix24Client
    config: PortalConfig


class PortalPuller:
    """Pulls one portal's offline queue; `pull()` handles one batch."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        portal: PortalRef,
        *,
        lease_s: float = LEASE_S,
        limit: int = BATCH_LIMIT,
        fault: Fault | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self.portal = portal
        self._lease_s = lease_s
        self._limit = limit
        self._fault = fault
        self._clock = clock
        self._scanned_at: float | None = None

    async def pull(self, client: Bitrix24Client, config: PortalConfig) -> Round:
        """Handle one batch: a left one read again (then `full`: pull again at once), else a
        new reservation (`full`, `some` or `empty` by its size)."""
        key = self.portal.key
        now = self._clock()
        if self._scanned_at is None or now - self._scanned_at >= ORPHAN_SCAN_S:
            await self._adopt(client)
            self._scanned_at = now
        async with self._pool.acquire() as conn:
            left = await store.claim_offline_batch(conn, key, self._lease_s)
        if left is not None:
            batch = await self._get(client, left)
            await self._handle(client, config, left, batch, again=True)
            return "full"
        batch = await self._get(client, None)
        if not batch.records:
            return "empty"
        if batch.process_id is None:
            raise BatchError("event.offline.get: a batch without its process_id (clear=0)")
        await self._at("reserved")
        async with self._pool.acquire() as conn:
            await store.record_offline_batch(conn, key, batch.process_id, self._lease_s)
        await self._handle(client, config, batch.process_id, batch, again=False)
        return round_of(len(batch.records), self._limit)

    async def _get(self, client: Bitrix24Client, process_id: str | None) -> Batch:
        params: dict[str, Any] = {"clear": 0, "limit": self._limit}
        if process_id is not None:
            params["process_id"] = process_id
        batch = read_batch((await client.call("event.offline.get", params)).result)
        return Batch(process_id or batch.process_id, batch.records)

    async def _handle(
        self,
        client: Bitrix24Client,
        config: PortalConfig,
        process_id: str,
        batch: Batch,
        *,
        again: bool,
    ) -> None:
        counts: dict[str, int] = {}
        unreadable: list[Unreadable] = []
        async with self._pool.acquire() as conn:
            for record in batch.records:
                outcome = read_record(record, self.portal, config)
                if isinstance(outcome, Unreadable):
                    unreadable.append(outcome)
                    status = "unreadable"
                    log.warning(
                        "offline_unreadable",
                        portal=self.portal.key,
                        message_id=outcome.message_id,
                        reason=outcome.reason,
                    )
                elif isinstance(outcome, Ignored):
                    status = "ignored"
                elif isinstance(outcome, Accepted):
                    event = outcome.to_event()
                    stored = await store.record_received(self._outbox, conn, event, outcome.payload)
                    status = "accepted" if stored else "duplicate"
                else:
                    # A lead or task update for dispatch's follow-up; its id derives from the
                    # record, so a batch read twice queues it once while it waits in the outbox.
                    update = outcome.to_event().model_copy(
                        update={"event_id": derived_id("offline", self.portal.key, record.id)}
                    )
                    await self._outbox.enqueue(conn, [update])
                    status = "forwarded"
                counts[status] = counts.get(status, 0) + 1
                EVENTS.labels(outcome=status).inc()
        await self._at("stored")
        errors = unreadable_ids(unreadable)
        if errors:
            await client.call(
                "event.offline.error", {"process_id": process_id, "message_id": errors}
            )
        await client.call("event.offline.clear", {"process_id": process_id})
        async with self._pool.acquire() as conn:
            await store.close_offline_batch(conn, self.portal.key, process_id)
        log.info(
            "offline_drained",
            portal=self.portal.key,
            events=len(batch.records),
            read_again=again,
            **counts,
        )

    async def _adopt(self, client: Bitrix24Client) -> None:
        """Note the reserved batches no row names (see the module docstring)."""
        reserved: set[str] = set()
        start: int | None = 0
        while start is not None:
            answer = await client.call(
                "event.offline.list",
                {"filter": {">PROCESS_ID": ""}, "order": {"ID": "ASC"}, "start": start},
            )
            rows = answer.result if isinstance(answer.result, list) else []
            reserved.update(str(row["PROCESS_ID"]) for row in rows if row.get("PROCESS_ID"))
            start = answer.next
        if not reserved:
            return
        async with self._pool.acquire() as conn:
            adopted = await store.adopt_offline_batches(
                conn, self.portal.key, sorted(reserved), self._lease_s
            )
        if adopted:
            log.warning("offline_batches_adopted", portal=self.portal.key, batches=len(adopted))

    async def _at(self, stage: str) -> None:
        if self._fault is not None:
            await self._fault(stage)


Portals = Callable[[], Awaitable[Sequence[ServedOffline]]]


@dataclass
class _Schedule:
    puller: PortalPuller
    wait_s: float = 0.0
    due: float = 0.0
    refused: str | None = field(default=None)


class OfflineIntake:
    """Pulls every served portal's offline queue, each on its own schedule: again at once after
    a full batch, `poll_s` after a partial one, and after an empty queue or a failure twice the
    last wait, up to `poll_max_s`. `portals()` is asked again every round (portals come and go)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        portals: Portals,
        poll_s: float,
        poll_max_s: float,
        *,
        lease_s: float = LEASE_S,
        fault: Fault | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._portals = portals
        self._poll_s = poll_s
        self._poll_max_s = poll_max_s
        self._lease_s = lease_s
        self._fault = fault
        self._clock = clock
        self._schedules: dict[str, _Schedule] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Pull until `stop` is set; `OfflineUnavailableError` ends it (and so stops ingest)."""
        while not stop.is_set():
            wait = await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def round(self) -> float:
        """Pull the portals that are due, together; the seconds until the next is due."""
        try:
            served = await self._portals()
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("offline_portals_unavailable", error=f"{exc}")
            return self._poll_max_s
        now = self._clock()
        due = []
        for portal in served:
            schedule = self._schedules.get(portal.portal.key)
            if schedule is None:
                puller = PortalPuller(
                    self._pool,
                    self._outbox,
                    portal.portal,
                    lease_s=self._lease_s,
                    fault=self._fault,
                    clock=self._clock,
                )
                schedule = self._schedules[portal.portal.key] = _Schedule(puller)
            if schedule.due <= now:
                due.append((portal, schedule))
        limit = asyncio.Semaphore(PARALLEL_PORTALS)

        async def pull(portal: ServedOffline, schedule: _Schedule) -> None:
            async with limit:
                await self._pull(portal, schedule)

        await asyncio.gather(*(pull(portal, schedule) for portal, schedule in due))
        if not served:
            return self._poll_max_s
        now = self._clock()
        keys = {portal.portal.key for portal in served}
        return max(0.0, min(s.due for key, s in self._schedules.items() if key in keys) - now)

    async def _pull(self, portal: ServedOffline, schedule: _Schedule) -> None:
        key = portal.portal.key
        label: str | None = None
        try:
            outcome = await schedule.puller.pull(portal.client, portal.config)
        except PortalNotInstalled as exc:
            outcome = "failed"
            log.info("offline_portal_not_installed", portal=key, status=exc.portal_status)
        except PermanentBitrix24Error as exc:
            kind = refusal(exc.code)
            if kind == "webhook":
                PULLS.labels(outcome="refused").inc()
                raise OfflineUnavailableError(f"INGEST_OFFLINE: {REFUSALS[kind]}") from None
            outcome, label = "failed", "refused"
            if schedule.refused != kind:
                log.error("offline_refused", portal=key, code=exc.code, reason=REFUSALS[kind])
            schedule.refused = kind
        except (TransientBitrix24Error, BatchError, asyncpg.PostgresError, OSError) as exc:
            outcome = "failed"
            log.warning("offline_pull_failed", portal=key, error=f"{exc}")
        else:
            schedule.refused = None
        PULLS.labels(outcome=label or outcome).inc()
        schedule.wait_s = next_wait(outcome, schedule.wait_s, self._poll_s, self._poll_max_s)
        schedule.due = self._clock() + schedule.wait_s


def served_portals(
    pool: asyncpg.Pool,
    configs_of: Callable[[], PortalConfigs],
    clients_of: Callable[[], PortalClients],
) -> Portals:
    """The portals to pull, from the runtime's providers: each portal served by key (the
    installed portals of application mode), or the one portal of a one-portal deployment
    (pinned by `portal.member_id` or learned; none while unknown: its events need its key).
    The providers are asked each time: the portals served may change while ingest runs."""
    warned: list[bool] = []

    async def portals() -> list[ServedOffline]:
        configs, clients = configs_of(), clients_of()
        keys = clients.keys()
        if keys is not None:
            by_key: list[ServedOffline] = []
            for key in keys:
                try:
                    by_key.append(
                        ServedOffline(PortalRef(member_id=key), clients.get(key), configs.get(key))
                    )
                except UnknownPortalError as exc:
                    log.warning("offline_portal_skipped", portal=key, reason=f"{exc}")
            return by_key
        config = configs.only()
        async with pool.acquire() as conn:
            served = await served_portal(conn, config)
        if served is None:
            if not warned:
                log.warning(
                    "offline_portal_unknown",
                    expected="portal.member_id in the portal YAML: offline events name no portal",
                )
                warned.append(True)
            return []
        return [ServedOffline(served.ref, clients.only(), config)]

    return portals
