"""The contact patch (docs/crm_sync.md): NPS scores written into contact cards without harming what
people keep there by hand, many contacts per request.

Contact actions are grouped (`grouping.GroupFormer`: up to 48 contacts, a short window). For a
group, under a per-contact lock shared by every replica:

1. one `crm.contact.list` command with an `@ID` filter reads the group's current values;
2. `policy.plan_answer()` decides every mapped field against those values and the ledger; what
   needs no write is recorded at once, the writes about to be sent are saved as the action's
   *intent* (so that a crash after sending them is recovered, not repeated blindly);
3. one request carries a *verify* read of the same contacts immediately followed by the
   `crm.contact.update` commands (the coalescer adds the next group's read to fill it to 50);
4. `policy.settle_writes()` decides what the verify read shows of each write; audit, ledger,
   conflicts, the action's completion and its `crm.written.contact` event are recorded in one
   transaction; only then is the message acked.

Every decision is the pure `policy` module's; the writer reads, calls it, writes and records.

Two groups at a time are between their read and the answer to their writes (`PIPELINE_DEPTH`):
one group's writes and the next one's read fill each request. A third group is formed, locked
and begun meanwhile and waits for a slot; a group gives its slot up as soon as the portal has
answered its writes, before recording them, so the next group's read is queued at once and
joins the request that carries the other group's writes.

Bitrix24 has no conditional update, so a person can still edit a field between our read and our
write. The verify read, executed by the portal right before our updates, shows whether that
happened; if it did, our write is repaired on the next round (`policy.plan_repairs()`): a scalar
gets the person's value back (and a conflict is recorded), a list gets their entries plus ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.entities import written_event
from services.crm_sync.grouping import GroupFormer
from services.crm_sync.locks import ContactLocks, LockSession
from services.crm_sync.policy import (
    Effects,
    LedgerEntry,
    Outgoing,
    PatchPlan,
    Repair,
    Role,
    conclude,
    contact_fields_for,
    field_roles,
    plan_answer,
    plan_details,
    plan_repairs,
    settle_writes,
)
from services.crm_sync.store import (
    AuditRow,
    Changes,
    ConflictRow,
    IntentWrite,
    LedgerRow,
    begin_actions,
    load_ledger,
    record,
)
from shared.bitrix24 import Command
from shared.events import CrmWritten, RouteAction, WriteOutcome
from shared.logging import bind_message_context, get_logger
from shared.outbox import Outbox
from shared.portal_config import ContactFields, PortalConfig

GROUP_SIZE = 48
"""Contacts per group: a verify read, 48 updates and the next group's read make 50 commands."""
GROUP_WINDOW_S = 0.2
PIPELINE_DEPTH = 2
"""Groups between their read and the answer to their writes (see the module docstring)."""
MAX_ROUNDS = 4
"""Write rounds per group: the first, and repairs while people keep editing the same fields."""

log = get_logger(__name__)


class StillEditingError(RuntimeError):
    """A field kept changing while we repaired it: retry the message later (transient)."""


@dataclass(eq=False)
class ContactJob:
    action: RouteAction
    fields: ContactFields
    future: asyncio.Future[CrmWritten | None]

    @property
    def contact_id(self) -> int:
        assert self.action.answer.contact_id is not None
        return self.action.answer.contact_id

    @property
    def portal(self) -> str:
        return self.action.answer.portal.key

    @property
    def key(self) -> Hashable:
        return (self.portal, self.contact_id)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def finish(self, event: CrmWritten | None) -> None:
        if not self.future.done():
            self.future.set_result(event)


@dataclass(eq=False)
class _Work:
    """One job's state across the rounds of its group."""

    job: ContactJob
    repairs: tuple[Repair, ...] = ()
    recovering: tuple[IntentWrite, ...] = ()
    """Writes an earlier attempt sent without recording them (looked at in the first round)."""
    plan: PatchPlan | None = None
    writes: tuple[Outgoing, ...] = ()
    outcome: WriteOutcome | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> RouteAction:
        return self.job.action

    @property
    def roles(self) -> dict[str, Role]:
        return field_roles(self.job.fields, self.action.answer)

    def fields(self) -> set[str]:
        return {*self.roles, *(repair.field for repair in self.repairs)}


def _add(work: _Work, effects: Effects, changes: Changes) -> None:
    """Add what the policy decided to record about one contact to `changes`."""
    portal, contact_id = work.job.portal, work.job.contact_id
    action_id, answer_id = work.action.action_id, work.action.answer.answer_id
    changes.audit += [
        AuditRow(
            portal=portal,
            contact_id=contact_id,
            field=a.field,
            before=a.before,
            after=a.after,
            kind=a.kind,
            action_id=action_id,
            answer_id=answer_id,
            before_ours=a.before_ours,
        )
        for a in effects.audit
    ]
    changes.ledger += [
        LedgerRow(portal, contact_id, o.field, o.value, o.version, action_id) for o in effects.owned
    ]
    changes.conflicts += [
        ConflictRow(
            portal, contact_id, c.field, c.reason, c.current, c.proposed, answer_id, action_id
        )
        for c in effects.conflicts
    ]


def _intents(sends: tuple[Outgoing, ...]) -> tuple[IntentWrite, ...]:
    return tuple(IntentWrite(send.write, send.before_ours) for send in sends)


class ContactWriter:
    """Carries out `route.contact` actions; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        coalescer: CommandCoalescer,
        config: PortalConfig,
        *,
        group_size: int = GROUP_SIZE,
        window_s: float = GROUP_WINDOW_S,
        depth: int = PIPELINE_DEPTH,
        locks: LockSession | None = None,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._coalescer = coalescer
        self._config = config
        self._locks = ContactLocks(locks or LockSession(pool))
        self._slots = asyncio.Semaphore(depth)
        self._groups: GroupFormer[ContactJob] = GroupFormer(
            self._process, max_size=group_size, window_s=window_s, max_active=depth + 1
        )

    async def patch(self, action: RouteAction) -> CrmWritten | None:
        """Carry out one contact action; returns once its effect is recorded (None when it was
        done before: nothing new is published)."""
        fields = contact_fields_for(action, self._config)
        if action.answer.contact_id is None or fields is None:
            reason = "no contact" if fields is not None else "no contact fields for this segment"
            return await self._skip(action, reason)
        job = ContactJob(action, fields, asyncio.get_running_loop().create_future())
        self._groups.submit(job)
        return await job.future

    async def _skip(self, action: RouteAction, reason: str) -> CrmWritten | None:
        async with self._pool.acquire() as conn:
            rows = await begin_actions(conn, [action])
            if rows[action.action_id].done:
                return None
            event = written_event(
                action,
                "skipped",
                entity_type="contact",
                entity_id=action.answer.contact_id,
                details={"reason": reason},
            )
            await record(self._outbox, conn, Changes(completions=[event]))
        return event

    # --- a group --------------------------------------------------------------------------

    async def _process(self, jobs: list[ContactJob]) -> list[ContactJob]:
        bind_message_context(group_size=len(jobs))
        keys = [(job.portal, job.contact_id) for job in jobs]
        held = await self._locks.acquire(keys)
        mine = [job for job in jobs if (job.portal, job.contact_id) in held]
        try:
            if mine:
                await self._patch(mine)
        finally:
            await self._locks.release([(job.portal, job.contact_id) for job in mine])
        return [job for job in jobs if (job.portal, job.contact_id) not in held]

    async def _patch(self, jobs: list[ContactJob]) -> None:
        async with self._pool.acquire() as conn:
            rows = await begin_actions(conn, [job.action for job in jobs])
        work: list[_Work] = []
        for job in jobs:
            row = rows[job.action.action_id]
            if row.done:
                job.finish(None)
            elif row.repairs:  # resuming repairs an earlier attempt saved
                outcome = cast(WriteOutcome, row.outcome or "patched")
                work.append(
                    _Work(job, row.repairs, row.intent, outcome=outcome, details=row.details)
                )
            else:
                work.append(_Work(job, recovering=row.intent))
        for _ in range(MAX_ROUNDS):
            if not work:
                return
            work = await self._round(work)
        for item in work:
            log.warning(
                "contact_still_being_edited",
                action_id=item.action.action_id,
                correlation_id=item.action.correlation_id,
                contact_id=item.job.contact_id,
            )
            item.job.fail(
                StillEditingError(
                    f"contact {item.job.contact_id}: a field kept changing while b24-nps put a "
                    "person's edit back; the repair is saved and resumes on the next attempt"
                )
            )

    async def _round(self, work: list[_Work]) -> list[_Work]:
        """Read, decide, write and record once; returns the work that owes a repair."""
        async with _Slot(self._slots) as slot:
            return await self._read_and_write(work, slot)

    async def _read_and_write(self, work: list[_Work], slot: _Slot) -> list[_Work]:
        wanted = sorted(set().union(*(item.fields() for item in work)))
        contacts = sorted({item.job.contact_id for item in work})
        read = await self._coalescer.run([self._read("read", contacts, wanted)])
        error = read.error("read")
        if error is not None:
            for item in work:
                item.job.fail(error)
            return []
        current = _rows_by_id(read.results["read"])
        async with self._pool.acquire() as conn:
            ledger = await load_ledger(
                conn, [(i.job.portal, i.job.contact_id) for i in work], wanted
            )
        planned = Changes()
        writing: list[_Work] = []
        for item in work:
            item.writes = ()
            row = current.get(item.job.contact_id)
            if row is None:
                self._not_found(item, planned)
            elif item.repairs:
                self._plan_repairs(item, row, planned)
            else:
                self._plan_answer(item, row, ledger, planned)
            if item.writes:
                writing.append(item)
        async with self._pool.acquire() as conn:
            await record(self._outbox, conn, planned)
        _settle(work, planned)
        if not writing:
            return []
        return await self._write(writing, slot)

    # --- deciding -------------------------------------------------------------------------

    def _not_found(self, item: _Work, planned: Changes) -> None:
        log.warning(
            "contact_not_found",
            action_id=item.action.action_id,
            correlation_id=item.action.correlation_id,
            contact_id=item.job.contact_id,
        )
        event = written_event(
            item.action,
            "skipped",
            entity_type="contact",
            entity_id=item.job.contact_id,
            details={"reason": "contact not found on the portal (deleted, or not visible)"},
        )
        planned.completions.append(event)

    def _plan_repairs(self, item: _Work, row: Mapping[str, Any], planned: Changes) -> None:
        step = plan_repairs(item.repairs, row, item.recovering)
        _add(item, step.effects, planned)
        item.recovering = ()
        item.writes = step.sends
        if item.writes:
            planned.intents[item.action.action_id] = _intents(item.writes)
        else:
            planned.completions.append(self._event(item))

    def _plan_answer(
        self,
        item: _Work,
        row: Mapping[str, Any],
        ledger: Mapping[tuple[str, int, str], LedgerEntry],
        planned: Changes,
    ) -> None:
        job = item.job
        entries = {
            name: ledger[(job.portal, job.contact_id, name)]
            for name in item.roles
            if (job.portal, job.contact_id, name) in ledger
        }
        step = plan_answer(job.fields, item.action.answer, row, entries, item.recovering)
        _add(item, step.effects, planned)
        item.plan = step.plan
        item.outcome = step.plan.outcome()
        item.details = plan_details(step.plan, job.contact_id)
        item.writes = step.sends
        if item.writes or item.recovering:
            planned.intents[item.action.action_id] = _intents(item.writes)
        item.recovering = ()
        if not item.writes:
            _add(item, conclude(step.plan), planned)
            planned.completions.append(self._event(item))

    def _event(self, item: _Work) -> CrmWritten:
        return written_event(
            item.action,
            item.outcome or "unchanged",
            entity_type="contact",
            entity_id=item.job.contact_id,
            details=item.details,
        )

    # --- writing --------------------------------------------------------------------------

    @staticmethod
    def _read(name: str, contacts: Sequence[int], fields: Sequence[str]) -> Command:
        return Command(
            name,
            "crm.contact.list",
            {"filter": {"@ID": list(contacts)}, "select": ["ID", *fields], "start": -1},
        )

    async def _write(self, writing: list[_Work], slot: _Slot) -> list[_Work]:
        written_fields = sorted({i.write.field for item in writing for i in item.writes})
        contacts = [item.job.contact_id for item in writing]
        commands = [self._read("verify", contacts, written_fields)]
        commands += [
            Command(
                f"w{item.job.contact_id}",
                "crm.contact.update",
                {
                    "ID": item.job.contact_id,
                    "FIELDS": {i.write.field: i.write.value for i in item.writes},
                    "PARAMS": {"REGISTER_SONET_EVENT": "N"},
                },
            )
            for item in writing
        ]
        result = await self._coalescer.run(commands)
        slot.release()  # the next group may read now; recording needs no request
        seen: dict[int, dict[str, Any]] | None = None
        verify_error = result.error("verify")
        if verify_error is None:
            seen = _rows_by_id(result.results["verify"])
        else:
            log.warning("contact_verify_failed", error=str(verify_error), contacts=len(contacts))
        changes = Changes()
        again: list[_Work] = []
        for item in writing:
            error = result.error(f"w{item.job.contact_id}")
            if error is not None:
                item.job.fail(error)
                continue
            before = None if seen is None else seen.get(item.job.contact_id, {})
            if self._record_write(item, before, changes):
                again.append(item)
        async with self._pool.acquire() as conn:
            await record(self._outbox, conn, changes)
        _settle(writing, changes)
        return again

    def _record_write(self, item: _Work, seen: Mapping[str, Any] | None, changes: Changes) -> bool:
        """Record one contact's writes; True when a repair is owed (another round)."""
        settled = settle_writes(
            item.writes,
            seen,
            plan=item.plan,
            roles=item.roles,
            outcome=item.outcome,
            details=item.details,
        )
        _add(item, settled.effects, changes)
        for repair in settled.repairs:
            log.warning(
                "contact_edited_while_writing",
                action_id=item.action.action_id,
                correlation_id=item.action.correlation_id,
                contact_id=item.job.contact_id,
                field=repair.field,
            )
        item.outcome, item.details = settled.outcome, settled.details
        if not settled.repairs:
            changes.completions.append(self._event(item))
            return False
        item.repairs, item.plan = settled.repairs, None
        changes.repairs[item.action.action_id] = (
            item.repairs,
            item.outcome or "patched",
            item.details,
        )
        return True


class _Slot:
    """A place in the pipeline (`PIPELINE_DEPTH`), held from a group's read until the portal
    has answered its writes; released at the latest when the round ends."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def __aenter__(self) -> _Slot:
        await self._slots.acquire()
        self._held = True
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


def _settle(work: Sequence[_Work], changes: Changes) -> None:
    """Settle the jobs whose completion was just recorded."""
    done = {event.action_id: event for event in changes.completions}
    for item in work:
        if item.action.action_id in done:
            item.job.finish(done[item.action.action_id])


def _rows_by_id(result: Any) -> dict[int, dict[str, Any]]:
    """`crm.contact.list` rows by contact id."""
    rows = result if isinstance(result, list) else []
    return {int(row["ID"]): row for row in rows if isinstance(row, dict) and "ID" in row}
