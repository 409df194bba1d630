"""`route.stage`: move an NPS deal to its funnel's success or failure stage, once, verified.

The funnel's stages come from `crm.status.list` (cached for a while), the deal from
`crm.item.get` (entityTypeId 2); the pure `shared.deal_stages.decide_stage` says what to do.
A move is sent together with a verify read in one request: Bitrix24 answers `true` to a stage it
did not take (one of another funnel), so only the read-back stage counts. What a person decided
(a final stage they chose, another funnel) is left alone and recorded in `crm_conflicts` under
the deal's contact (0 when it has none) and the field `D_<deal id>.STAGE_ID`.

Exactly once: the action is registered in `crm_actions` before any call; the stage about to be
set is marked in the stage ledger before the move is sent, so a retry after a crash finds the
deal at the wanted stage (nothing to do) or still before it (moved now).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, get_args

import asyncpg

from services.crm_sync import stage_ledger
from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.entities import written_event
from services.crm_sync.stage_ledger import StageMark
from services.crm_sync.store import Changes, ConflictRow, begin_attempt, note_failure, record
from shared.bitrix24 import Bitrix24Error, Command, NotFound
from shared.deal_stages import (
    Conflict,
    Funnel,
    Leave,
    StageDecision,
    StageOutcome,
    decide_stage,
    read_funnel,
    status_entity_id,
)
from shared.events import DEAL_ENTITY_TYPE_ID, CrmWritten, RouteAction, WriteOutcome
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox

FUNNEL_TTL_S = 300.0
OUTCOMES: dict[str, StageOutcome] = {outcome: outcome for outcome in get_args(StageOutcome)}
NO_CONTACT = 0
"""`contact_id` of a stage conflict about a deal without a contact (Bitrix24 ids start at 1)."""

log = get_logger(__name__)


def stage_field(deal_id: int) -> str:
    """How a deal's stage is named in `crm_conflicts` (Bitrix24's code of the deal)."""
    return f"D_{deal_id}.STAGE_ID"


class StageWriter:
    """Carries out `route.stage` actions."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        coalescer: CommandCoalescer,
        ttl_s: float = FUNNEL_TTL_S,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._coalescer = coalescer
        self._ttl_s = ttl_s
        self._funnels: dict[int, tuple[float, Funnel]] = {}

    async def move(self, action: RouteAction) -> CrmWritten | None:
        """Move the action's deal once; None when the action was done before."""
        given = action.params.get("outcome")
        outcome = OUTCOMES.get(str(given))
        if outcome is None:
            raise PermanentError(f"params.outcome must be success, failure or leave: {given!r}")
        answer = action.answer
        if answer.entity_type_id != DEAL_ENTITY_TYPE_ID:
            raise PermanentError(f"answer {answer.answer_id} is not held by a deal")
        async with self._pool.acquire() as conn:
            row = await begin_attempt(conn, action)
        if row.done:
            return None
        try:
            return await self._move(action, outcome)
        except Bitrix24Error as exc:
            async with self._pool.acquire() as conn:
                await note_failure(conn, action.action_id, str(exc))
            raise

    async def _move(self, action: RouteAction, outcome: StageOutcome) -> CrmWritten:
        answer = action.answer
        deal_id = answer.item_id
        funnel = await self._funnel(answer.category_id)
        deal = await self._deal(deal_id)
        if deal is None:
            return await self._done(action, "skipped", {"reason": "the deal no longer exists"})
        category, current = _int(deal.get("categoryId")), _text(deal.get("stageId"))
        async with self._pool.acquire() as conn:
            mark = await stage_ledger.load(conn, answer.portal.key, deal_id)
        if mark is not None and mark.updated_at > answer.updated_at:
            reason = "a newer answer decided the stage"
            return await self._done(action, "skipped", {"reason": reason, "stage": current})
        try:
            decision = decide_stage(
                outcome, funnel, category, current, None if mark is None else mark.stage_id
            )
        except ValueError as exc:
            raise PermanentError(f"deal {deal_id}: {exc}") from exc
        return await self._carry_out(action, outcome, decision, current)

    async def _carry_out(
        self,
        action: RouteAction,
        outcome: StageOutcome,
        decision: StageDecision,
        current: str | None,
    ) -> CrmWritten:
        answer = action.answer
        deal_id = answer.item_id
        if isinstance(decision, Leave):
            return await self._done(
                action, "unchanged", {"reason": decision.reason, "stage": current}
            )
        if isinstance(decision, Conflict):
            return await self._conflict(action, decision.reason, current, outcome)
        wanted = StageMark(decision.stage_id, answer.answer_id, answer.updated_at)
        async with self._pool.acquire() as conn:
            if not await stage_ledger.mark(
                conn, answer.portal.key, deal_id, wanted, action.action_id
            ):
                reason = "a newer answer decided the stage"
                return await self._done(action, "skipped", {"reason": reason, "stage": current})
        moved = await self._coalescer.run(
            [
                Command(
                    "move",
                    "crm.item.update",
                    {
                        "entityTypeId": DEAL_ENTITY_TYPE_ID,
                        "id": deal_id,
                        "fields": {"stageId": decision.stage_id},
                    },
                ),
                Command(
                    "verify", "crm.item.get", {"entityTypeId": DEAL_ENTITY_TYPE_ID, "id": deal_id}
                ),
            ]
        )
        moved.result("move")
        now = _text(_item(moved.result("verify")).get("stageId"))
        if now != decision.stage_id:
            reason = f"the portal accepted the move to {decision.stage_id} but kept {now}"
            return await self._conflict(action, reason, now, outcome)
        log.info("deal_stage_moved", deal_id=deal_id, stage=now, previous=current)
        return await self._done(action, "patched", {"from": current, "to": now})

    async def _funnel(self, category_id: int) -> Funnel:
        cached = self._funnels.get(category_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        params = {"filter": {"ENTITY_ID": status_entity_id(category_id)}}
        reply = await self._coalescer.run([Command("stages", "crm.status.list", params)])
        rows = reply.result("stages")
        funnel = read_funnel(category_id, rows if isinstance(rows, list) else [])
        self._funnels[category_id] = (now, funnel)
        return funnel

    async def _deal(self, deal_id: int) -> Mapping[str, Any] | None:
        params = {"entityTypeId": DEAL_ENTITY_TYPE_ID, "id": deal_id}
        reply = await self._coalescer.run([Command("deal", "crm.item.get", params)])
        if isinstance(reply.error("deal"), NotFound):
            return None
        return _item(reply.result("deal"))

    async def _conflict(
        self, action: RouteAction, reason: str, current: str | None, outcome: StageOutcome
    ) -> CrmWritten:
        answer = action.answer
        conflict = ConflictRow(
            portal=answer.portal.key,
            contact_id=answer.contact_id or NO_CONTACT,
            field=stage_field(answer.item_id),
            reason=reason,
            current=current,
            proposed=outcome,
            answer_id=answer.answer_id,
            action_id=action.action_id,
        )
        log.info("deal_stage_left_alone", deal_id=answer.item_id, reason=reason)
        return await self._done(action, "conflict", {"reason": reason, "stage": current}, conflict)

    async def _done(
        self,
        action: RouteAction,
        outcome: WriteOutcome,
        details: Mapping[str, Any],
        conflict: ConflictRow | None = None,
    ) -> CrmWritten:
        answer = action.answer
        event = written_event(
            action,
            outcome,
            entity_type="deal",
            entity_id=answer.item_id,
            details={**details, "answer_id": answer.answer_id, "contact_id": answer.contact_id},
        )
        changes = Changes(conflicts=[] if conflict is None else [conflict], completions=[event])
        async with self._pool.acquire() as conn:
            await record(self._outbox, conn, changes)
        return event


def _item(result: Any) -> Mapping[str, Any]:
    item = result.get("item") if isinstance(result, Mapping) else None
    return item if isinstance(item, Mapping) else {}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
