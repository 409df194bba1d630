"""Follow-up at work (docs/dispatch.md, Follow-up): every lead and task crm_sync created is
recorded from its `crm.written.<action>` (queue `dispatch.followup`), its state read in batches
(bulk lane, 50 ids per list call, 50 calls per request) when due (at once after the portal's
update event, queue `dispatch.updates`), and an overdue one escalated
once: a `dispatch.call_task` command for crm_sync, queued in the same transaction that marks the
follow-up escalated, so a redelivery, a restart or a second replica never escalates twice.
The decisions are the pure `followup.py`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from services.dispatch import followup_store as store
from services.dispatch.followup import (
    ESCALATION,
    LEAD_STATUS_READ,
    LeadStatuses,
    Seen,
    command_action,
    command_request,
    escalation_command_id,
    escalation_due,
    escalation_target,
    escalation_text,
    follow_id,
    lead_seen,
    lead_statuses,
    next_read,
    observe,
    read_ids,
    rows_by_id,
    sla_due,
    state_reads,
    task_seen,
)
from services.dispatch.followup_store import FollowRow, NewFollowup
from services.dispatch.metrics import ESCALATIONS, FOLLOWUP_READS, FOLLOWUP_UPDATES
from shared.bitrix24 import Bitrix24Client, Bitrix24Error, Command
from shared.db import Conn
from shared.dispatch_config import FOLLOWED_ACTIONS, Dispatch, Followup, SlaUntil
from shared.events import (
    CallTask,
    CrmWritten,
    DispatchCommand,
    PortalEntityUpdated,
    PortalRef,
    derived_id,
    utcnow,
)
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.portals import PortalClients, PortalConfigs

log = get_logger(__name__)
Clock = Callable[[], datetime]
STATUSES_TTL_S = 600.0
"""How long the lead statuses' meaning is kept before `crm.status.list` is read again (in the
same request as the leads)."""
STATUSES = "statuses"


def _aware(moment: datetime) -> datetime:
    """A publisher's naive time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _to_follow(written: CrmWritten) -> bool:
    """Whether the outcome is a lead or task to follow: created (or found created); whether its
    portal's follow-up is on is asked apart."""
    return (
        written.outcome in ("created", "existing")
        and written.entity_id is not None
        and written.entity_type in ("lead", "task")
    )


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Follower:
    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        config: PortalConfig | PortalConfigs,
        *,
        portal: Bitrix24Client | PortalClients,
        clock: Clock = utcnow,
        batch: int = 500,
        lease_s: float = 300.0,
    ) -> None:
        """`config` and `portal`: the portals served (`PortalConfigs`, `PortalClients`), or one
        portal's configuration and client for every follow-up."""
        self._pool = pool
        self._outbox = outbox
        self._configs = config if isinstance(config, PortalConfigs) else PortalConfigs.one(config)
        self._clients = portal if isinstance(portal, PortalClients) else PortalClients.one(portal)
        self._clock = clock
        self._batch = batch
        self._lease = timedelta(seconds=lease_s)
        self._statuses: dict[str, tuple[float, LeadStatuses]] = {}

    def _followup(self, portal: str) -> Followup:
        """The follow-up section of the portal's configuration."""
        return (self._configs.get(portal).dispatch or Dispatch()).followup

    def _tz(self, portal: str) -> ZoneInfo:
        return ZoneInfo(self._configs.get(portal).portal.timezone)

    # -- crm_sync's outcomes ---------------------------------------------------------------

    async def on_written(self, written: CrmWritten) -> None:
        """Follow a created lead or task; record the outcome of an escalation task."""
        kind = command_action(written.action_id) if written.action == "call_task" else None
        if kind == ESCALATION:
            await self._escalation_written(written)
            await self._follow_escalation(written)
            return
        if written.action not in FOLLOWED_ACTIONS or (
            written.action == "call_task" and kind != "call_task"
        ):
            return
        if not _to_follow(written):
            return
        new = await self._new_followup(written)
        if self._followup(new.portal).enabled:
            await self._record(new)

    async def _record(self, new: NewFollowup) -> None:
        async with self._pool.acquire() as conn:
            recorded = await store.record(conn, new)
        log.info(
            "followup_recorded" if recorded else "followup_already_recorded",
            action=new.action,
            entity_type=new.entity_type,
            entity_id=new.entity_id,
        )

    def _sla_columns(
        self, portal: str, action: str, created: datetime
    ) -> tuple[float | None, bool | None, SlaUntil | None, datetime | None]:
        """The SLA `action` has now on `portal`, kept with the row: hours, working hours,
        until, deadline."""
        followup = self._followup(portal)
        sla = followup.sla(action)
        if sla is None:
            return None, None, None, None
        due = sla_due(created, sla, followup.working_hours, self._tz(portal))
        return sla.sla_hours, sla.working_hours, sla.until, due

    def _first_read(self, portal: str, created: datetime, due: datetime | None) -> datetime:
        first_read = created + timedelta(minutes=self._followup(portal).read_every_minutes)
        return due if due is not None and due < first_read else first_read

    async def _new_followup(self, written: CrmWritten) -> NewFollowup:
        details = written.details
        portal = str(details.get("portal") or "default")
        manager = _int(details.get("manager_id"))
        request_id = command_request(written.action_id) if written.action == "call_task" else None
        if request_id is not None:
            async with self._pool.acquire() as conn:
                found = await store.request_manager(conn, request_id)
            if found is not None:
                portal, manager = found
        created = _aware(written.occurred_at)
        hours, working, until, due = self._sla_columns(portal, written.action, created)
        assert written.entity_id is not None
        return NewFollowup(
            follow_id=follow_id(written.action_id),
            portal=portal,
            action=written.action,
            action_id=written.action_id,
            entity_type=str(written.entity_type),
            entity_id=written.entity_id,
            responsible_id=_int(details.get("responsible_id")),
            manager_id=manager,
            contact_id=_int(details.get("contact_id")),
            deal_id=_int(details.get("deal_id")),
            answer_id=None if details.get("answer_id") is None else str(details["answer_id"]),
            request_id=request_id,
            created_at=created,
            next_read_at=self._first_read(portal, created, due),
            sla_hours=hours,
            sla_working_hours=working,
            sla_until=until,
            due_at=due,
        )

    async def _follow_escalation(self, written: CrmWritten) -> None:
        """Follow the escalation task crm_sync created like any task (action `escalation`): the
        escalated follow-up's portal, manager, contact and deal; to its deadline, never escalated
        itself."""
        follow = command_request(written.action_id)
        assert follow is not None
        if not _to_follow(written):
            return
        async with self._pool.acquire() as conn:
            escalated = await store.get(conn, follow)
        if escalated is None:
            log.warning("followup_escalation_unknown", entity_id=written.entity_id)
            return
        if not self._followup(escalated.portal).enabled:
            return
        created = _aware(written.occurred_at)
        hours, working, until, due = self._sla_columns(escalated.portal, ESCALATION, created)
        assert written.entity_id is not None
        await self._record(
            NewFollowup(
                follow_id=follow_id(written.action_id),
                portal=escalated.portal,
                action=ESCALATION,
                action_id=written.action_id,
                entity_type="task",
                entity_id=written.entity_id,
                responsible_id=_int(written.details.get("responsible_id"))
                or escalated.escalated_to,
                manager_id=escalated.manager_id,
                contact_id=escalated.contact_id,
                deal_id=escalated.deal_id,
                answer_id=escalated.answer_id,
                request_id=None,
                created_at=created,
                next_read_at=self._first_read(escalated.portal, created, due),
                sla_hours=hours,
                sla_working_hours=working,
                sla_until=until,
                due_at=due,
            )
        )

    async def _escalation_written(self, written: CrmWritten) -> None:
        follow = command_request(written.action_id)
        assert follow is not None
        created = written.outcome in ("created", "existing")
        async with self._pool.acquire() as conn:
            changed = await store.escalation_written(
                conn,
                follow,
                created=created,
                task_id=written.entity_id if created else None,
                reason=None if created else str(written.details.get("reason") or "failed"),
                now=self._clock(),
            )
        if changed:
            ESCALATIONS.labels(outcome="created" if created else "failed").inc()
        log.info("followup_escalation_written", outcome=written.outcome, recorded=changed)

    # -- the portal's update events --------------------------------------------------------

    async def on_updated(self, updated: PortalEntityUpdated) -> None:
        """A lead or task changed in the portal: a followed one is read at the timer's next
        round, in its batch, instead of at its scheduled read."""
        async with self._pool.acquire() as conn:
            marked = await store.read_now(
                conn, updated.portal.key, updated.entity_type, updated.entity_id, self._clock()
            )
        FOLLOWUP_UPDATES.labels(outcome="read_now" if marked else "not_followed").inc()
        log.info(
            "followup_update_event",
            entity_type=updated.entity_type,
            entity_id=updated.entity_id,
            read_now=marked,
        )

    # -- the timer -------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> int:
        """Read what is due and escalate what is overdue at `now`; the number of entities read."""
        now = now or self._clock()
        read = await self._read_due(now)
        await self._escalate(now)
        return read

    async def _read_due(self, now: datetime) -> int:
        async with self._pool.acquire() as conn:
            rows = await store.claim_reads(
                conn, now, self._batch, self._lease, self._configs.keys()
            )
        by_portal: dict[str, list[FollowRow]] = {}
        for row in rows:
            by_portal.setdefault(row.portal, []).append(row)
        applied = 0
        for portal, its in by_portal.items():
            applied += await self._read_portal(portal, its, now)
        return applied

    async def _read_portal(self, portal: str, rows: list[FollowRow], now: datetime) -> int:
        """Read one portal's claimed rows in one request through its own client."""
        leads = [row.entity_id for row in rows if row.entity_type == "lead"]
        tasks = [row.entity_id for row in rows if row.entity_type == "task"]
        reads = state_reads(leads, tasks)
        commands = [Command(r.name, r.method, r.params) for r in reads]
        statuses = self._cached_statuses(portal) if leads else None
        if leads and statuses is None:
            commands.append(Command(STATUSES, "crm.status.list", LEAD_STATUS_READ))
        try:
            response = await self._clients.get(portal).batch(commands)
        except Bitrix24Error as exc:
            log.warning("followup_read_failed", error=type(exc).__name__, entities=len(rows))
            FOLLOWUP_READS.labels(outcome="failed").inc(len(rows))
            return 0  # claimed until the lease ends, then read again
        if STATUSES in response.results:
            statuses = lead_statuses(response.results[STATUSES])
            self._statuses[portal] = (time.monotonic(), statuses)
        seen: dict[tuple[str, int], Seen | None] = {}
        for r in reads:
            kind = "lead" if r.method == "crm.lead.list" else "task"
            error = response.errors.get(r.name)
            if error is not None or (kind == "lead" and statuses is None):
                log.warning(
                    "followup_read_failed",
                    method=r.method,
                    error=type(error).__name__ if error else "no lead statuses",
                    entities=len(read_ids(r)),
                )
                continue
            found = rows_by_id(r, response.results.get(r.name))
            for entity in read_ids(r):
                portal_row = found.get(entity)
                if portal_row is None:
                    seen[(kind, entity)] = None
                elif kind == "lead":
                    assert statuses is not None
                    seen[(kind, entity)] = lead_seen(portal_row, statuses)
                else:
                    seen[(kind, entity)] = task_seen(portal_row)
        return await self._apply_all(rows, seen, now)

    async def _apply_all(
        self, rows: list[FollowRow], seen: dict[tuple[str, int], Seen | None], now: datetime
    ) -> int:
        """Apply what was read of the claimed `rows` (`seen`: a row not in it failed); how
        many were applied."""
        applied = superseded = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for row in rows:
                key = (row.entity_type, row.entity_id)
                if key not in seen:
                    continue
                if await self._apply(conn, row, seen[key], now):
                    applied += 1
                else:
                    superseded += 1
        FOLLOWUP_READS.labels(outcome="read").inc(applied)
        FOLLOWUP_READS.labels(outcome="superseded").inc(superseded)
        FOLLOWUP_READS.labels(outcome="failed").inc(len(rows) - applied - superseded)
        return applied

    async def _apply(self, conn: Conn, row: FollowRow, seen: Seen | None, now: datetime) -> bool:
        """Apply one read; False when its claim was lost meanwhile (`apply_read`)."""
        followed = row.followed()
        change = observe(followed, seen, now)
        later = next_read(followed, change.state, now, self._followup(row.portal))
        if not await store.apply_read(conn, row, change, now=now, next_read_at=later):
            log.info("followup_read_superseded", entity_type=row.entity_type)
            return False
        if change.state != row.state:
            log.info(
                "followup_changed",
                action=row.action,
                entity_type=row.entity_type,
                entity_id=row.entity_id,
                state=change.state,
                outcome=change.outcome,
            )
        return True

    def _cached_statuses(self, portal: str) -> LeadStatuses | None:
        """The portal's lead statuses' meaning read less than `STATUSES_TTL_S` ago (else None:
        read them again with the leads)."""
        cached = self._statuses.get(portal)
        if cached is not None and time.monotonic() - cached[0] < STATUSES_TTL_S:
            return cached[1]
        return None

    async def _escalate(self, now: datetime) -> None:
        async with self._outbox.transaction(self._pool) as conn:
            candidates = await store.escalation_candidates(
                conn, now, self._batch, self._configs.keys()
            )
            for row in candidates:
                if escalation_due(row.followed(), now):
                    await self._escalate_one(conn, row, now)

    async def _escalate_one(self, conn: Conn, row: FollowRow, now: datetime) -> None:
        followup = self._followup(row.portal)
        sla = followup.sla(row.action)
        routing = self._configs.get(row.portal).routing
        target = escalation_target(row.action, followup, routing.service.responsible_id)
        reason: str | None = None
        if sla is None or not sla.escalate:
            reason = f"escalation is off (dispatch.followup.{row.action}.escalate)"
        elif target is None:
            reason = "no one to escalate to (dispatch.followup.escalate_to)"
        elif row.contact_id is None and row.deal_id is None:
            reason = "neither a contact nor a deal to bind the escalation task to"
        if reason is not None:
            await store.mark_escalation(conn, row.follow_id, "skipped", now=now, reason=reason)
            ESCALATIONS.labels(outcome="skipped").inc()
            log.info("followup_escalation_skipped", action=row.action, reason=reason)
            return
        assert target is not None
        title, description = escalation_text(row.followed(), row.entity_id, self._tz(row.portal))
        command = DispatchCommand(
            event_id=derived_id(row.follow_id, ESCALATION),
            correlation_id=f"followup:{row.follow_id}",
            command_id=escalation_command_id(row.follow_id),
            request_id=row.follow_id,
            portal=_portal_ref(row.portal),
            call_task=CallTask(
                responsible_id=target,
                title=title,
                description=description,
                deadline_hours=followup.escalation_deadline_hours,
                contact_id=row.contact_id,
                deal_id=row.deal_id,
            ),
        )
        await store.mark_escalation(conn, row.follow_id, "queued", now=now, to=target)
        await self._outbox.enqueue(conn, [command])
        ESCALATIONS.labels(outcome="queued").inc()
        log.info(
            "followup_escalated",
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            to=target,
        )


def _portal_ref(key: str) -> PortalRef:
    return PortalRef() if key == "default" else PortalRef(member_id=key)
