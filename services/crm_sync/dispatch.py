"""Dispatch's commands (queue `crm_sync.dispatch`: `dispatch.nps_deal`, `dispatch.survey_send`,
`dispatch.call_task`, `dispatch.robot_answer`) carried out on the portal once per `command_id`,
each outcome recorded in `crm_actions` together with its `crm.written.<action>` event in the
outbox (docs/crm_sync.md, Dispatch's commands). What to call and what the answers mean is the
pure `dispatch_calls.py`.

Every command is registered and its attempt counted (committed) before any call. Creates look
their entity up first, in the same request as the checks that what they refer to exists: an NPS
deal by `originId` (the request id), a call task by `XML_ID` (the command id) among the tasks of
its deal or contact. A send records what the link field held before it goes out; after an
uncertain outcome the link read back decides (`plan_send`). All of it is bulk work for the rate
budget.

Permanent problems of the command (`RefusedError`, or the portal refusing what was asked) are
outcome `failed` with `details.reason`; transient ones (the portal down, 5xx, limits) propagate,
so the message is retried; a permanent error that concerns the webhook or the portal
(authorisation, a missing method) dead-letters the message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.crm_sync.coalescer import CommandCoalescer, UnitResult
from services.crm_sync.dispatch_calls import (
    Call,
    Observed,
    Recovered,
    RefusedError,
    call_task_add,
    call_task_lookup,
    call_task_step,
    check_send,
    contact_read,
    deal_read,
    dispatch_written,
    found,
    funnel_read,
    item_of,
    nps_deal_add,
    nps_deal_lookup,
    nps_deal_step,
    plan_send,
    portal_wide,
    robot_answer_params,
    send_details,
    send_reads,
    timeline_id,
)
from services.crm_sync.entities import ActionError, created_id, found_task
from services.crm_sync.locks import LockSession, WriterLocks
from services.crm_sync.store import (
    Changes,
    CommandRow,
    begin_command,
    note_failure,
    note_observed,
    record,
)
from services.crm_sync.survey_items import found_item, written_item_id
from shared.bitrix24 import Bitrix24Error, Command, NotFound, PermanentBitrix24Error
from shared.events import (
    CallTask,
    CrmWritten,
    DispatchCommand,
    PortalSend,
    RobotAnswer,
    WriteOutcome,
)
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox

log = get_logger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _commands(calls: list[Call] | tuple[Call, ...]) -> list[Command]:
    return [Command(call.name, call.method, call.params) for call in calls]


def _portal_refusal(exc: Bitrix24Error, what: str | None = None) -> RefusedError | None:
    """The portal's permanent refusal (of `what`) as a `RefusedError`; None when the error is
    transient or concerns the webhook or the portal as a whole."""
    if isinstance(exc, PermanentBitrix24Error) and not portal_wide(exc.code):
        return RefusedError(f"the portal refused {what}: {exc}" if what else f"{exc}")
    return None


_LOCK_NAMESPACE = 0x4E50_5344  # "NPSD": advisory locks on dispatch commands being carried out


class CommandBusyError(RuntimeError):
    """Another replica carries this command out now: the message is retried later."""


class DispatchWriter:
    """Carries out `DispatchCommand`s."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        coalescer: CommandCoalescer,
        *,
        clock: Clock = _utcnow,
        locks: LockSession | None = None,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._coalescer = coalescer
        self._clock = clock
        self._writing = WriterLocks(
            locks or LockSession(pool),
            _LOCK_NAMESPACE,
            lambda command_id: CommandBusyError(f"command {command_id} is carried out elsewhere"),
        )
        """One writer per command: two copies of a message (an outbox row published again
        after a crash) would otherwise both look the NPS deal up, find none and create two."""

    async def carry_out(self, command: DispatchCommand) -> CrmWritten | None:
        """Carry `command` out once; its event, or None when it was done before (nothing new is
        written or published)."""
        async with self._writing.hold(command.command_id):
            return await self._carry_out_once(command)

    async def _carry_out_once(self, command: DispatchCommand) -> CrmWritten | None:
        async with self._pool.acquire() as conn:
            row = await begin_command(conn, command, _contact_of(command))
        if row.done:
            return None
        try:
            return await self._carry_out(command, row)
        except RefusedError as exc:
            return await self._refused(command, exc)
        except Bitrix24Error as exc:
            refusal = _portal_refusal(exc)
            if refusal is not None:
                return await self._refused(command, refusal)
            async with self._pool.acquire() as conn:
                await note_failure(conn, command.command_id, str(exc))
            raise

    async def _carry_out(self, command: DispatchCommand, row: CommandRow) -> CrmWritten:
        if command.nps_deal is not None:
            return await self._nps_deal(command)
        if command.survey_send is not None:
            return await self._survey_send(command, command.survey_send, row)
        if command.robot_answer is not None:
            return await self._robot_answer(command, command.robot_answer)
        assert command.call_task is not None
        return await self._call_task(command, command.call_task)

    async def _refused(self, command: DispatchCommand, refusal: RefusedError) -> CrmWritten:
        log.info("dispatch_command_refused", command_id=command.command_id, reason=str(refusal))
        entity_type, entity_id = _failed_entity(command)
        return await self._done(command, "failed", entity_type, entity_id, {"reason": str(refusal)})

    # --- nps_deal -------------------------------------------------------------------------

    async def _nps_deal(self, command: DispatchCommand) -> CrmWritten:
        deal = command.nps_deal
        assert deal is not None
        reply = await self._coalescer.run(
            [
                Command("find", "crm.item.list", nps_deal_lookup(command)),
                Command("contact", "crm.contact.list", contact_read(deal.contact_id)),
                Command("stages", "crm.status.list", funnel_read(deal.category_id)),
            ]
        )
        existing = nps_deal_step(
            deal,
            existing=found_item(reply.result("find")),
            contact=found(reply.result("contact")),
            stages=reply.result("stages"),
        )
        details = {"category_id": deal.category_id, "contact_id": deal.contact_id}
        if existing is not None:
            log.info("nps_deal_found", command_id=command.command_id, deal_id=existing)
            return await self._done(command, "existing", "deal", existing, details)
        added = await self._coalescer.run(
            [Command("add", "crm.item.add", nps_deal_add(command, deal))]
        )
        error = added.error("add")
        if error is not None:
            raise _portal_refusal(error, "the NPS deal") or error
        try:
            deal_id = written_item_id(added.result("add"))
        except ActionError as exc:
            raise PermanentError(str(exc)) from exc
        log.info("nps_deal_created", command_id=command.command_id, deal_id=deal_id)
        return await self._done(command, "created", "deal", deal_id, details)

    # --- survey_send ----------------------------------------------------------------------

    async def _survey_send(
        self, command: DispatchCommand, send: PortalSend, row: CommandRow
    ) -> CrmWritten:
        check_send(send)
        reads = send_reads(send)
        reply = await self._coalescer.run(_commands(reads))
        deal = item_of(reply.result("deal")) if _exists(reply, "deal") else None
        stages = reply.result("stages") if send.stage is not None else None
        plan = plan_send(send, deal, stages, Observed.from_json(row.observed))
        details = send_details(send)
        if isinstance(plan, Recovered):
            log.info("survey_send_found_sent", command_id=command.command_id, deal_id=send.deal_id)
            return await self._done(
                command, "sent", "deal", send.deal_id, {**details, "recovered": True}
            )
        await self._observe(command, Observed(plan.current))
        result = await self._coalescer.run_halting(_commands(plan.calls))
        await self._delivered(command, send, result)
        if any(call.name == "timeline" for call in plan.calls):
            details.update(self._timeline(command, result))
        log.info("survey_send_sent", command_id=command.command_id, deal_id=send.deal_id)
        return await self._done(command, "sent", "deal", send.deal_id, details)

    async def _observe(self, command: DispatchCommand, observed: Observed) -> None:
        async with self._pool.acquire() as conn:
            await note_observed(conn, command.command_id, observed.to_json())

    async def _delivered(
        self, command: DispatchCommand, send: PortalSend, result: UnitResult
    ) -> None:
        """Return when the link and the trigger (or the move) went through; raise otherwise.
        When the portal answered and the delivery did not run, the link field no longer tells
        anything (it may hold the url without a message having gone out): it is recorded as
        holding the url before the next attempt, which therefore sends again."""
        link, deliver = result.error("link"), result.error("deliver")
        if deliver is None:
            return
        failed_as_a_whole = link is not None and "deliver" in result.errors
        if not failed_as_a_whole:
            await self._observe(command, Observed(send.url))
        if link is not None:
            raise _portal_refusal(link, f"the link in {send.link_field}") or link
        how = f"the move to stage {send.stage}" if send.stage else f"trigger {send.trigger}"
        refusal = _portal_refusal(deliver, how)
        if refusal is not None:
            raise RefusedError(f"{refusal} (the link is in the deal; no message went out)")
        raise deliver

    def _timeline(self, command: DispatchCommand, result: UnitResult) -> dict[str, Any]:
        """What became of the timeline entry (`timeline_id`, else `timeline_error`). The message
        has gone out by then, so a failed entry never fails the send (nor repeats it)."""
        error = result.error("timeline")
        if error is None:
            return {"timeline_id": timeline_id(result.results.get("timeline"))}
        log.warning("survey_send_timeline_failed", command_id=command.command_id, error=str(error))
        return {"timeline_error": str(error)}

    # --- call_task ------------------------------------------------------------------------

    async def _call_task(self, command: DispatchCommand, task: CallTask) -> CrmWritten:
        reads = [Command("find", "tasks.task.list", call_task_lookup(task))]
        if task.deal_id is not None:
            reads.append(Command("deal", "crm.item.get", deal_read(task.deal_id)))
        if task.contact_id is not None:
            reads.append(Command("contact", "crm.contact.list", contact_read(task.contact_id)))
        reply = await self._coalescer.run(reads)
        existing = call_task_step(
            task,
            existing=found_task(reply.result("find"), command.command_id),
            deal=None if task.deal_id is None else _exists(reply, "deal"),
            contact=None if task.contact_id is None else found(reply.result("contact")),
        )
        details = {
            "responsible_id": task.responsible_id,
            "deal_id": task.deal_id,
            "contact_id": task.contact_id,
        }
        if existing is not None:
            log.info("call_task_found", command_id=command.command_id, task_id=existing)
            return await self._done(command, "existing", "task", existing, details)
        params = call_task_add(command.command_id, task, self._clock())
        added = await self._coalescer.run([Command("add", "tasks.task.add", params)])
        error = added.error("add")
        if error is not None:
            raise _portal_refusal(error, "the call task") or error
        try:
            task_id = created_id("tasks.task.add", added.result("add"))
        except ActionError as exc:
            raise PermanentError(str(exc)) from exc
        log.info("call_task_created", command_id=command.command_id, task_id=task_id)
        return await self._done(command, "created", "task", task_id, details)

    # --- robot_answer ---------------------------------------------------------------------

    async def _robot_answer(self, command: DispatchCommand, answer: RobotAnswer) -> CrmWritten:
        """Answer the waiting business process. The portal takes one answer per launch: a
        launch no longer waiting (answered, timed out, cancelled) refuses it, outcome
        `failed` with the portal's reason."""
        reply = await self._coalescer.run(
            [Command("answer", "bizproc.event.send", robot_answer_params(answer))]
        )
        error = reply.error("answer")
        if error is not None:
            raise _portal_refusal(error, "the robot's answer") or error
        log.info("robot_answered", command_id=command.command_id, sent=answer.sent)
        return await self._done(
            command, "sent", "robot", None, {"sent": answer.sent, "reason": answer.reason}
        )

    # --- the record -----------------------------------------------------------------------

    async def _done(
        self,
        command: DispatchCommand,
        outcome: WriteOutcome,
        entity_type: str,
        entity_id: int | None,
        details: Mapping[str, Any],
    ) -> CrmWritten:
        """Record the outcome and queue its event, in one statement."""
        event = dispatch_written(
            command, outcome, entity_type=entity_type, entity_id=entity_id, details=details
        )
        async with self._pool.acquire() as conn:
            await record(self._outbox, conn, Changes(completions=[event]))
        return event


def _exists(reply: UnitResult, name: str) -> bool:
    """Whether a `crm.item.get` found its item (any other error propagates)."""
    if isinstance(reply.error(name), NotFound):
        return False
    reply.result(name)
    return True


def _contact_of(command: DispatchCommand) -> int | None:
    if command.nps_deal is not None:
        return command.nps_deal.contact_id
    if command.call_task is not None:
        return command.call_task.contact_id
    return None


def _failed_entity(command: DispatchCommand) -> tuple[str, int | None]:
    if command.survey_send is not None:
        return "deal", command.survey_send.deal_id
    if command.robot_answer is not None:
        return "robot", None
    return ("deal", None) if command.nps_deal is not None else ("task", None)


async def handle_dispatch(command: DispatchCommand, writer: DispatchWriter) -> None:
    """The `crm_sync.dispatch` consumer: transient errors propagate (retried), permanent ones
    of the webhook or portal dead-letter, a command's own problems are its outcome `failed`."""
    event = await writer.carry_out(command)
    if event is None:
        log.info(
            "dispatch_command_already_done", command_id=command.command_id, action=command.action
        )
        return
    log.info(
        "crm_written",
        action_id=command.command_id,
        action=command.action,
        outcome=event.outcome,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        lane="bulk",
    )
