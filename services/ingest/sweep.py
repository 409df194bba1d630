"""The catch-up sweep: Bitrix24 never re-sends an event that failed, so every few minutes the NPS
items updated since a stored watermark are listed and the ones ingest never saw are submitted.

"Seen" means: an answer was already published for that state of the item (or a later one), or an
event, robot call or earlier sweep for the item arrived after that update. A submission is a
`WebhookReceived` with `source="sweep"`, `ts` = the item's updatedTime and the listed fields
(so the hydrator needs no second read), stored and queued through the outbox like any event.

Deals are swept the same way when deal surveys are configured (`crm.item.list` with entityTypeId 2,
only the deal surveys' funnels), with a watermark of their own.

Each sales funnel of `dispatch.sales` is swept through its stage history
(`crm.stagehistory.list`, entityTypeId 2, the funnel's moves to a success stage, `STAGE_SEMANTIC_ID`
"S", since its own watermark): the deals not announced as `sale.closed` yet are submitted without
fields (the hydrator reads the deal, decides and announces it once), so a lost deal event or robot
call is recovered.

It sweeps only the portal the deployment serves: `portal.member_id`, else the portal ingest learned
from the first event (never the portal of whatever event came last); in application mode each
installed portal in turn (`run_sweeps`, one `Sweeper` per portal). The first sweep of a portal
only records a watermark (it does not replay the portal's history);
`nps sweep --since <time>` backfills from an explicit point. One sweeper runs at a time across
processes (a PostgreSQL advisory lock); the others skip their turn. Next to the sweep, the
sweeper reads the names of the responsible managers answers named (services/ingest/users.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from services.ingest import store, users
from services.ingest.mapping import AnswerError, read_id, read_time
from services.ingest.sales import sales_funnels
from services.ingest.webhook import SWEEP_EVENT, correlation_for
from shared.bitrix24 import Bitrix24Client
from shared.db import Conn
from shared.events import DEAL_ENTITY_TYPE_ID, PortalRef, WebhookReceived, utcnow
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.served_portal import served_portal

SWEEP_LOCK = 0x6E70_0100  # the advisory lock that keeps sweeps from running side by side
OVERLAP = timedelta(minutes=2)
"""Re-list a little before the watermark: an item saved just before the last sweep may have
become visible only after it. Items seen already are not submitted twice."""
CHUNK = 200
STAGE_HISTORY = "crm.stagehistory.list"
STAGE_HISTORY_SCOPE = "stagehistory"
"""The watermark scope of a sales funnel's stage-history sweep: `stagehistory:<funnel>`."""
SUCCESS_SEMANTIC_ID = "S"

SWEPT = Counter(
    "nps_ingest_sweep_items_total", "Items listed by the sweep, by outcome", ["outcome"]
)
SWEEP_LAST_RUN = Gauge(
    "nps_ingest_sweep_last_run_timestamp_seconds",
    "When this process last completed a sweep (or started its sweep loop), Unix time",
)
SWEEP_INTERVAL = Gauge("nps_ingest_sweep_interval_seconds", "SWEEP_INTERVAL_S of this process")

log = get_logger(__name__)


@dataclass(frozen=True)
class SweepResult:
    ran: bool
    """False when another process held the sweep lock."""
    listed: int = 0
    submitted: int = 0
    watermark: datetime | None = None
    initialised: bool = False
    """True on a portal's first sweep: the watermark was set to now and nothing was listed."""


class Sweeper:
    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        client: Bitrix24Client,
        config: PortalConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        portal: PortalRef | None = None,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._client = client
        self._config = config
        self._clock = clock
        self._portal_ref = portal
        """The portal swept (application mode: one Sweeper per installed portal); None: the
        served one, pinned or learned."""

    def reconfigure(self, config: PortalConfig) -> None:
        """Sweep with `config` from the next turn on (a reloaded portal YAML)."""
        self._config = config

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Sweep every `interval_s` until `stop` is set; a failed sweep waits for the next turn.

        `nps_ingest_sweep_last_run_timestamp_seconds` starts at the loop's start and moves on
        with each completed sweep: an alert compares its newest value across processes (only
        one sweeps at a time) with the interval."""
        await run_sweeps(lambda: [self], interval_s, stop)

    async def turn(self) -> None:
        """One sweep, logged; a failure is logged and waits for the next turn."""
        try:
            result = await self.sweep_once()
        except Exception as exc:
            log.warning("sweep_failed", error=f"{type(exc).__name__}: {exc}", **self._named())
        else:
            if result.ran:
                SWEEP_LAST_RUN.set_to_current_time()
                log.info(
                    "sweep_done",
                    listed=result.listed,
                    submitted=result.submitted,
                    watermark=result.watermark.isoformat() if result.watermark else None,
                    **self._named(),
                )

    def _named(self) -> dict[str, str]:
        """The portal swept, for its log lines in application mode."""
        return {} if self._portal_ref is None else {"portal": self._portal_ref.key}

    async def sweep_once(self, since: datetime | None = None) -> SweepResult:
        """One sweep from the stored watermark, or from `since` when given."""
        async with self._pool.acquire() as lock:
            if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", SWEEP_LOCK):
                log.info("sweep_skipped", reason="another process is sweeping")
                return SweepResult(ran=False)
            try:
                return await self._sweep(since)
            finally:
                await lock.execute("SELECT pg_advisory_unlock($1)", SWEEP_LOCK)

    async def _sweep(self, since: datetime | None) -> SweepResult:
        result = await self._sweep_type(self._config.survey.entity_type_id, {}, since)
        if not result.ran:
            return result
        more: list[SweepResult] = []
        if self._config.deal_surveys:
            funnels = [deal.category_id for deal in self._config.deal_surveys]
            more.append(
                await self._sweep_type(DEAL_ENTITY_TYPE_ID, {"@categoryId": funnels}, since)
            )
        for funnel in sales_funnels(self._config):
            more.append(await self._sweep_sales(funnel, since))
        return SweepResult(
            ran=True,
            listed=result.listed + sum(part.listed for part in more),
            submitted=result.submitted + sum(part.submitted for part in more),
            watermark=result.watermark,
            initialised=result.initialised,
        )

    async def _sweep_type(
        self, entity_type_id: int, only: Mapping[str, Any], since: datetime | None
    ) -> SweepResult:
        async with self._pool.acquire() as conn:
            portal = await self._portal(conn)
            if portal is None:
                log.info(
                    "sweep_waiting_for_portal",
                    hint="set portal.member_id in the portal YAML to sweep before the first event",
                )
                return SweepResult(ran=False)
            start = since or await store.watermark(conn, portal.key, entity_type_id)
            if start is None:
                now = self._clock()
                await store.set_watermark(conn, portal.key, entity_type_id, now)
                log.info("sweep_watermark_initialised", watermark=now.isoformat())
                return SweepResult(ran=True, watermark=now, initialised=True)
        newest = start
        listed = submitted = 0
        chunk: list[Mapping[str, Any]] = []
        async for item in self._client.list_all(
            "crm.item.list",
            {
                "entityTypeId": entity_type_id,
                "filter": {">=updatedTime": (start - OVERLAP).isoformat(), **only},
                "select": ["*"],
                "useOriginalUfNames": "Y",
            },
            id_field="id",
            items_key="items",
        ):
            listed += 1
            chunk.append(item)
            if len(chunk) >= CHUNK:
                count, newest = await self._submit(portal, entity_type_id, chunk, newest)
                submitted += count
                chunk = []
        count, newest = await self._submit(portal, entity_type_id, chunk, newest)
        submitted += count
        async with self._pool.acquire() as conn:
            await store.set_watermark(conn, portal.key, entity_type_id, newest)
        return SweepResult(ran=True, listed=listed, submitted=submitted, watermark=newest)

    async def _sweep_sales(self, funnel: int, since: datetime | None) -> SweepResult:
        """The sales funnel's moves to a success stage since its watermark (stage history): the
        deals not announced yet are submitted."""
        scope = f"{STAGE_HISTORY_SCOPE}:{funnel}"
        async with self._pool.acquire() as conn:
            portal = await self._portal(conn)
            if portal is None:
                return SweepResult(ran=False)
            start = since or await store.watermark(conn, portal.key, DEAL_ENTITY_TYPE_ID, scope)
            if start is None:
                now = self._clock()
                await store.set_watermark(conn, portal.key, DEAL_ENTITY_TYPE_ID, now, scope)
                log.info("sweep_watermark_initialised", watermark=now.isoformat(), scope=scope)
                return SweepResult(ran=True, watermark=now, initialised=True)
        newest = start
        listed = submitted = 0
        chunk: list[Mapping[str, Any]] = []
        async for row in self._client.list_all(
            STAGE_HISTORY,
            {
                "entityTypeId": DEAL_ENTITY_TYPE_ID,
                "filter": {
                    "CATEGORY_ID": funnel,
                    "STAGE_SEMANTIC_ID": SUCCESS_SEMANTIC_ID,
                    ">CREATED_TIME": (start - OVERLAP).isoformat(),
                },
            },
            id_field="ID",
            items_key="items",
        ):
            listed += 1
            chunk.append(row)
            if len(chunk) >= CHUNK:
                count, newest = await self._submit_sales(portal, chunk, newest)
                submitted += count
                chunk = []
        count, newest = await self._submit_sales(portal, chunk, newest)
        submitted += count
        async with self._pool.acquire() as conn:
            await store.set_watermark(conn, portal.key, DEAL_ENTITY_TYPE_ID, newest, scope)
        return SweepResult(ran=True, listed=listed, submitted=submitted, watermark=newest)

    async def _submit_sales(
        self, portal: PortalRef, rows: Sequence[Mapping[str, Any]], newest: datetime
    ) -> tuple[int, datetime]:
        """Submit the deals of one chunk of stage-history rows not announced yet (each once,
        at its latest move); the count and the newest move so far."""
        moves: dict[int, datetime] = {}
        for row in rows:
            try:
                deal_id, moved = _stage_move(row)
            except AnswerError as exc:
                SWEPT.labels(outcome="unreadable").inc()
                log.warning("sweep_stage_move_unreadable", row_id=row.get("ID"), reason=str(exc))
                continue
            moves[deal_id] = max(moves.get(deal_id, moved), moved)
            newest = max(newest, moved)
        if not moves:
            return 0, newest
        submitted = 0
        async with self._outbox.transaction(self._pool) as conn:
            announced = await store.announced_sales(conn, portal.key, list(moves))
            for deal_id, moved in moves.items():
                if deal_id in announced:
                    continue
                event = WebhookReceived(
                    correlation_id=correlation_for(portal, DEAL_ENTITY_TYPE_ID, deal_id),
                    portal=portal,
                    source="sweep",
                    event=SWEEP_EVENT,
                    entity_type_id=DEAL_ENTITY_TYPE_ID,
                    item_id=deal_id,
                    ts=int(moved.timestamp()),
                )
                payload = {"id": deal_id, "stageHistory": {"CREATED_TIME": moved.isoformat()}}
                if await store.record_received(self._outbox, conn, event, payload):
                    submitted += 1
                    log.info("sweep_sale_submitted", deal_id=deal_id, moved_at=moved.isoformat())
        SWEPT.labels(outcome="seen").inc(len(moves) - submitted)
        SWEPT.labels(outcome="submitted").inc(submitted)
        return submitted, newest

    async def refresh_names(self) -> int:
        """Read the names of the managers answers named that are not read yet or stale (see
        services/ingest/users.py), of the served portal; how many were read."""
        async with self._pool.acquire() as conn:
            portal = await self._portal(conn)
            if portal is None:
                return 0
            return await users.refresh_names(conn, self._client, portal.key, self._clock())

    async def run_names(self, interval_s: float, stop: asyncio.Event) -> None:
        """`refresh_names` every `interval_s` until `stop` is set (a failed turn waits)."""
        await run_names(lambda: [self], interval_s, stop)

    async def names_turn(self) -> None:
        """One `refresh_names`; a failure is logged and waits for the next turn."""
        try:
            await self.refresh_names()
        except Exception as exc:
            log.warning("user_names_failed", error=f"{type(exc).__name__}: {exc}", **self._named())

    async def _portal(self, conn: Conn) -> PortalRef | None:
        """The portal the deployment serves (pinned, or learned from the first event: the same
        key events use); None before it is known: answers submitted under a guessed key would
        count twice."""
        if self._portal_ref is not None:
            return self._portal_ref
        portal = await served_portal(conn, self._config)
        return None if portal is None else portal.ref

    async def _submit(
        self,
        portal: PortalRef,
        entity_type_id: int,
        items: Sequence[Mapping[str, Any]],
        newest: datetime,
    ) -> tuple[int, datetime]:
        """Submit the unseen items of one chunk; the count and the newest updatedTime so far."""
        candidates: list[tuple[int, datetime, Mapping[str, Any]]] = []
        for item in items:
            try:
                updated = read_time(item, "updatedTime", item.get("id"))
                item_id = int(item["id"])
            except (AnswerError, KeyError, TypeError, ValueError) as exc:
                SWEPT.labels(outcome="unreadable").inc()
                log.warning("sweep_item_unreadable", item_id=item.get("id"), reason=str(exc))
                continue
            candidates.append((item_id, updated, item))
            newest = max(newest, updated)
        if not candidates:
            return 0, newest
        submitted = 0
        async with self._outbox.transaction(self._pool) as conn:
            seen = await store.seen_items(
                conn, portal.key, entity_type_id, [(i, u) for i, u, _ in candidates]
            )
            for item_id, updated, item in candidates:
                if item_id in seen:
                    continue
                event = WebhookReceived(
                    correlation_id=correlation_for(portal, entity_type_id, item_id),
                    portal=portal,
                    source="sweep",
                    event=SWEEP_EVENT,
                    entity_type_id=entity_type_id,
                    item_id=item_id,
                    ts=int(updated.timestamp()),
                    fields=dict(item),
                )
                payload = {"id": item_id, "updatedTime": item.get("updatedTime")}
                if await store.record_received(self._outbox, conn, event, payload):
                    submitted += 1
                    log.info("sweep_submitted", item_id=item_id, updated_at=updated.isoformat())
        SWEPT.labels(outcome="seen").inc(len(candidates) - submitted)
        SWEPT.labels(outcome="submitted").inc(submitted)
        return submitted, newest


def _stage_move(row: Mapping[str, Any]) -> tuple[int, datetime]:
    """A stage-history row's deal (`OWNER_ID`) and the time of the move (`CREATED_TIME`)."""
    deal_id = read_id(row, "OWNER_ID", row.get("ID"))
    if deal_id is None:
        raise AnswerError(row.get("ID"), "OWNER_ID", row.get("OWNER_ID"), "the deal's id")
    return deal_id, read_time(row, "CREATED_TIME", deal_id)


async def run_sweeps(
    sweepers: Callable[[], Sequence[Sweeper]], interval_s: float, stop: asyncio.Event
) -> None:
    """Every `interval_s` until `stop` is set, a turn of each of `sweepers()` (one portal's, or
    in application mode each installed portal's as they are at that turn)."""
    SWEEP_INTERVAL.set(interval_s)
    SWEEP_LAST_RUN.set_to_current_time()
    while not stop.is_set():
        for sweeper in sweepers():
            await sweeper.turn()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


async def run_names(
    sweepers: Callable[[], Sequence[Sweeper]], interval_s: float, stop: asyncio.Event
) -> None:
    """As `run_sweeps`, reading the managers' names (`Sweeper.refresh_names`)."""
    while not stop.is_set():
        for sweeper in sweepers():
            await sweeper.names_turn()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
