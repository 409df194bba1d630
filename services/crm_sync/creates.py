"""Leads (`service`, `marketing`) and tasks (`task`), each created exactly once per action.

Every attempt is counted in `crm_actions` (committed) before the create call is made. An attempt
that finds an earlier one on record cannot know whether that one created the entity (a timeout, a
lost answer, a crash before the record): it looks the entity up by the action id first
(`ORIGIN_ID` for leads, `XML_ID` for tasks) and creates it only when nothing is found. Commands go
through the coalescer, so creates of concurrent messages share requests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.entities import (
    TASK_ACTION,
    ActionError,
    created_id,
    deadline_for,
    found_lead,
    found_task,
    lead_fields,
    lead_lookup,
    manager_name,
    responsible_for,
    task_fields,
    task_lookup,
    written_event,
)
from services.crm_sync.locks import LockSession, WriterLocks
from services.crm_sync.store import Changes, begin_attempt, note_failure, record
from shared.bitrix24 import Bitrix24Error, Command
from shared.bitrix24.lanes import BULK, Lane, lane_of
from shared.events import CrmWritten, RouteAction, WriteOutcome
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig

MANAGER_TTL_S = 3600.0
_LOCK_NAMESPACE = 0x4E50_5345  # "NPSE": advisory locks on actions whose entity is being created

log = get_logger(__name__)


class ManagerNames:
    """Names of the customers' responsible managers (`user.get`), cached for an hour."""

    def __init__(self, coalescer: CommandCoalescer, ttl_s: float = MANAGER_TTL_S) -> None:
        self._coalescer = coalescer
        self._ttl_s = ttl_s
        self._cache: dict[int, tuple[float, str]] = {}

    async def name(self, user_id: int | None, *, lane: Lane = BULK) -> str:
        if user_id is None:
            return manager_name(None, None)
        cached = self._cache.get(user_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        command = Command("user", "user.get", {"ID": user_id})
        reply = await self._coalescer.run([command], lane=lane)
        users = reply.result("user")
        user = users[0] if isinstance(users, list) and users else None
        name = manager_name(user if isinstance(user, dict) else None, user_id)
        self._cache[user_id] = (now, name)
        return name


class ActionBusyError(RuntimeError):
    """Another replica creates this action's entity now: the message is retried later."""


class EntityWriter:
    """Carries out `route.service`, `route.marketing` and `route.task` actions."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        coalescer: CommandCoalescer,
        config: PortalConfig,
        *,
        locks: LockSession | None = None,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._coalescer = coalescer
        self._config = config
        self._managers = ManagerNames(coalescer)
        self._writing = WriterLocks(
            locks or LockSession(pool),
            _LOCK_NAMESPACE,
            lambda action_id: ActionBusyError(f"action {action_id} is created elsewhere"),
        )
        """One writer per action: two copies of a message in flight together (an outbox row
        published again after a crash, a redelivery) would otherwise both count an attempt,
        the second one look the entity up before the first created it, and create two."""

    async def create(self, action: RouteAction) -> CrmWritten | None:
        """Create the action's lead or task once; returns its event (None when the action was
        done before: nothing new is published)."""
        async with self._writing.hold(action.action_id):
            return await self._create_once(action)

    async def _create_once(self, action: RouteAction) -> CrmWritten | None:
        task = action.action == TASK_ACTION
        entity_type = "task" if task else "lead"
        try:
            responsible = responsible_for(action, self._config)
        except ActionError as exc:
            raise PermanentError(str(exc)) from exc
        async with self._pool.acquire() as conn:
            row = await begin_attempt(conn, action)
        if row.done:
            return None
        try:
            entity_id = None
            if row.attempts > 0:
                entity_id = await self._find(action, task)
            if entity_id is not None:
                log.info("crm_entity_found", entity_type=entity_type, entity_id=entity_id)
                return await self._record_created(
                    action, "existing", entity_type, entity_id, responsible
                )
            entity_id = await self._add(action, task, responsible)
        except Bitrix24Error as exc:
            async with self._pool.acquire() as conn:
                await note_failure(conn, action.action_id, str(exc))
            raise
        log.info("crm_entity_created", entity_type=entity_type, entity_id=entity_id)
        return await self._record_created(action, "created", entity_type, entity_id, responsible)

    async def _find(self, action: RouteAction, task: bool) -> int | None:
        if task:
            command = Command("find", "tasks.task.list", task_lookup(action))
            reply = await self._coalescer.run([command], lane=lane_of(action.urgent))
            return found_task(reply.result("find"), action.action_id)
        command = Command("find", "crm.lead.list", lead_lookup(action.action_id))
        reply = await self._coalescer.run([command], lane=lane_of(action.urgent))
        return found_lead(reply.result("find"))

    async def _add(self, action: RouteAction, task: bool, responsible: int) -> int:
        if task:
            manager = await self._managers.name(
                action.answer.responsible_id, lane=lane_of(action.urgent)
            )
            try:
                deadline = deadline_for(action, self._config, datetime.now(UTC))
            except ActionError as exc:
                raise PermanentError(str(exc)) from exc
            method, params = "tasks.task.add", task_fields(action, responsible, manager, deadline)
        else:
            method, params = "crm.lead.add", lead_fields(action, responsible)
        command = Command("add", method, params)
        reply = await self._coalescer.run([command], lane=lane_of(action.urgent))
        try:
            return created_id(method, reply.result("add"))
        except ActionError as exc:
            raise PermanentError(str(exc)) from exc

    async def _record_created(
        self,
        action: RouteAction,
        outcome: WriteOutcome,
        entity_type: str,
        entity_id: int,
        responsible: int,
    ) -> CrmWritten:
        answer = action.answer
        event = written_event(
            action,
            outcome,
            entity_type=entity_type,
            entity_id=entity_id,
            details={
                "contact_id": answer.contact_id,
                "answer_id": answer.answer_id,
                "portal": answer.portal.key,
                "responsible_id": responsible,
                "manager_id": answer.responsible_id,
            },
        )
        async with self._pool.acquire() as conn:
            await record(self._outbox, conn, Changes(completions=[event]))
        return event
