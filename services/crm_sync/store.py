"""crm_sync's write model in PostgreSQL: actions, the ownership ledger, the audit and conflicts
it records, and undo. The contact locks are in `locks.py`; the conflict and audit listings in the
read module, `read.py`.

Field values are stored as JSON exactly as read from or sent to the portal (strings, lists of
strings); SQL NULL means "no value".
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from services.crm_sync.locks import ContactKey
from services.crm_sync.policy import LedgerEntry, Repair, Version, Write
from services.crm_sync.read import WriteView, load_value
from shared.db import Conn
from shared.events import CrmWritten, DispatchCommand, RouteAction
from shared.outbox import Outbox, QueuingStatement, StatementBuilder


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentWrite:
    """A contact write sent before its outcome was recorded (`before_ours` for the audit)."""

    write: Write
    before_ours: bool

    def to_json(self) -> dict[str, Any]:
        w = self.write
        return {"field": w.field, "base": w.base, "value": w.value, "before_ours": self.before_ours}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IntentWrite:
        write = Write(data["field"], data["base"], data["value"])
        return cls(write, bool(data.get("before_ours")))


@dataclass(frozen=True)
class ActionRow:
    action_id: str
    state: str
    attempts: int
    """Attempts made before this one (a create that may have happened is looked up first)."""
    intent: tuple[IntentWrite, ...] = ()
    repairs: tuple[Repair, ...] = ()
    outcome: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state == "done"


def _action_row(row: asyncpg.Record, attempts: int | None = None) -> ActionRow:
    intent = load_value(row["intent"]) or []
    repairs = load_value(row["repairs"]) or []
    return ActionRow(
        action_id=row["action_id"],
        state=row["state"],
        attempts=row["attempts"] if attempts is None else attempts,
        intent=tuple(IntentWrite.from_json(item) for item in intent),
        repairs=tuple(Repair.from_json(item) for item in repairs),
        outcome=row["outcome"],
        details=load_value(row["details"]) or {},
    )


async def begin_actions(conn: Conn, actions: Sequence[RouteAction]) -> dict[str, ActionRow]:
    """Register `actions` (once) and return their rows, by action id."""
    ids = [a.action_id for a in actions]
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO crm_actions (action_id, portal, action, answer_id, contact_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
               ON CONFLICT (action_id) DO NOTHING""",
            ids,
            [a.answer.portal.key for a in actions],
            [a.action for a in actions],
            [a.answer.answer_id for a in actions],
            [a.answer.contact_id for a in actions],
        )
        rows = await conn.fetch(
            """SELECT action_id, state, attempts, intent, repairs, outcome, details
               FROM crm_actions WHERE action_id = ANY($1::text[])""",
            ids,
        )
    return {row["action_id"]: _action_row(row) for row in rows}


async def begin_attempt(conn: Conn, action: RouteAction) -> ActionRow:
    """Register `action` and count one more attempt, in one statement (committed before any call
    is made); the row's `attempts` is the number made before this one. A done action is returned
    as is."""
    answer = action.answer
    row = await conn.fetchrow(
        """INSERT INTO crm_actions AS a (action_id, portal, action, answer_id, contact_id, attempts)
           VALUES ($1, $2, $3, $4, $5, 1)
           ON CONFLICT (action_id) DO UPDATE SET attempts = a.attempts + 1, updated_at = now()
               WHERE a.state = 'pending'
           RETURNING action_id, state, attempts, intent, repairs, outcome, details""",
        action.action_id,
        answer.portal.key,
        action.action,
        answer.answer_id,
        answer.contact_id,
    )
    if row is not None:
        return _action_row(row, attempts=row["attempts"] - 1)
    done = await conn.fetchrow(
        """SELECT action_id, state, attempts, intent, repairs, outcome, details
           FROM crm_actions WHERE action_id = $1""",
        action.action_id,
    )
    assert done is not None
    return _action_row(done)


@dataclass(frozen=True)
class CommandRow:
    """A dispatch command's row in `crm_actions`."""

    state: str
    attempts: int
    """Attempts made before this one."""
    observed: Any
    """What a send found in the deal's link field before it went out (JSON; None: no send
    was attempted yet)."""

    @property
    def done(self) -> bool:
        return self.state == "done"


async def begin_command(conn: Conn, command: DispatchCommand, contact_id: int | None) -> CommandRow:
    """Register a dispatch command (the survey request's id as its `answer_id`) and count one
    more attempt, in one statement committed before any call; a done command is returned as
    is."""
    row = await conn.fetchrow(
        """INSERT INTO crm_actions AS a (action_id, portal, action, answer_id, contact_id, attempts)
           VALUES ($1, $2, $3, $4, $5, 1)
           ON CONFLICT (action_id) DO UPDATE SET attempts = a.attempts + 1, updated_at = now()
               WHERE a.state = 'pending'
           RETURNING state, attempts - 1 AS attempts, observed""",
        command.command_id,
        command.portal.key,
        command.action,
        str(command.request_id),
        contact_id,
    )
    if row is None:
        row = await conn.fetchrow(
            "SELECT state, attempts, observed FROM crm_actions WHERE action_id = $1",
            command.command_id,
        )
        assert row is not None
    return CommandRow(row["state"], row["attempts"], load_value(row["observed"]))


async def note_observed(conn: Conn, action_id: str, observed: Mapping[str, Any]) -> None:
    """Record what a send found in the link field, before the send goes out."""
    await conn.execute(
        """UPDATE crm_actions SET observed = $2::jsonb, updated_at = now()
           WHERE action_id = $1 AND state = 'pending'""",
        action_id,
        _dump(observed),
    )


async def note_failure(conn: Conn, action_id: str, error: str) -> None:
    await conn.execute(
        "UPDATE crm_actions SET last_error = $2, updated_at = now() WHERE action_id = $1",
        action_id,
        error[:2000],
    )


# --- the ledger -----------------------------------------------------------------------------


async def load_ledger(
    conn: Conn, contacts: Iterable[ContactKey], fields: Iterable[str]
) -> dict[tuple[str, int, str], LedgerEntry]:
    """Ledger entries of `fields` of `contacts`, by (portal, contact, field)."""
    keys = sorted(set(contacts))
    rows = await conn.fetch(
        """SELECT l.portal, l.contact_id, l.field, l.owned_value, l.answer_id,
                  l.submitted_at, l.updated_at, l.item_id, l.revision
           FROM crm_field_ledger l
           JOIN unnest($1::text[], $2::bigint[]) AS k(portal, contact_id)
             ON l.portal = k.portal AND l.contact_id = k.contact_id
           WHERE l.field = ANY($3::text[])""",
        [portal for portal, _ in keys],
        [contact for _, contact in keys],
        sorted(set(fields)),
    )
    return {
        (row["portal"], row["contact_id"], row["field"]): LedgerEntry(
            Version(
                row["submitted_at"],
                row["updated_at"],
                row["item_id"],
                row["answer_id"],
                row["revision"],
            ),
            load_value(row["owned_value"]),
        )
        for row in rows
    }


# --- recording a round of contact work ------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    portal: str
    contact_id: int
    field: str
    before: Any
    after: Any
    kind: str
    action_id: str | None
    answer_id: str | None
    before_ours: bool = False


@dataclass(frozen=True)
class LedgerRow:
    portal: str
    contact_id: int
    field: str
    owned_value: Any
    version: Version
    action_id: str


@dataclass(frozen=True)
class ConflictRow:
    portal: str
    contact_id: int
    field: str
    reason: str
    current: Any
    proposed: Any
    answer_id: str
    action_id: str


@dataclass
class Changes:
    """Everything one step of the writer records, in one transaction."""

    audit: list[AuditRow] = field(default_factory=list)
    ledger: list[LedgerRow] = field(default_factory=list)
    conflicts: list[ConflictRow] = field(default_factory=list)
    intents: dict[str, tuple[IntentWrite, ...]] = field(default_factory=dict)
    """Writes about to be sent, per action (an empty tuple clears the intent)."""
    repairs: dict[str, tuple[tuple[Repair, ...], str, dict[str, Any]]] = field(default_factory=dict)
    """Repairs still owed per action, with the outcome and details gathered so far."""
    completions: list[CrmWritten] = field(default_factory=list)
    """Actions done, each with the event announcing it (sent through the outbox)."""

    def __bool__(self) -> bool:
        return any(
            (
                self.audit,
                self.ledger,
                self.conflicts,
                self.intents,
                self.repairs,
                self.completions,
            )
        )


async def record(outbox: Outbox, conn: Conn, changes: Changes) -> None:
    """Apply `changes` atomically (in a transaction of `outbox`, the caller's or a new one; none
    is needed when there are only completions: they are one statement)."""
    if not changes:
        return
    only_completions = not replace(changes, completions=[])
    async with contextlib.nullcontext(conn) if only_completions else outbox.transaction(conn):
        if changes.audit:
            await conn.executemany(
                """INSERT INTO crm_contact_writes (portal, contact_id, field, before_value,
                       after_value, before_ours, kind, answer_id, action_id)
                   VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9)""",
                [
                    (
                        a.portal,
                        a.contact_id,
                        a.field,
                        _dump(a.before),
                        _dump(a.after),
                        a.before_ours,
                        a.kind,
                        a.answer_id,
                        a.action_id,
                    )
                    for a in changes.audit
                ],
            )
        if changes.ledger:
            await conn.executemany(
                """INSERT INTO crm_field_ledger AS l (portal, contact_id, field, owned_value,
                       answer_id, submitted_at, updated_at, item_id, revision, action_id)
                   VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10)
                   ON CONFLICT (portal, contact_id, field) DO UPDATE
                   SET owned_value = EXCLUDED.owned_value, answer_id = EXCLUDED.answer_id,
                       submitted_at = EXCLUDED.submitted_at, updated_at = EXCLUDED.updated_at,
                       item_id = EXCLUDED.item_id, revision = EXCLUDED.revision,
                       action_id = EXCLUDED.action_id, changed_at = now()
                   WHERE (l.submitted_at, l.updated_at, l.item_id, l.answer_id COLLATE "C",
                          l.revision)
                         <= (EXCLUDED.submitted_at, EXCLUDED.updated_at, EXCLUDED.item_id,
                             EXCLUDED.answer_id COLLATE "C", EXCLUDED.revision)""",
                [
                    (
                        r.portal,
                        r.contact_id,
                        r.field,
                        _dump(r.owned_value),
                        r.version.answer_id,
                        r.version.submitted_at,
                        r.version.updated_at,
                        r.version.item_id,
                        r.version.revision,
                        r.action_id,
                    )
                    for r in changes.ledger
                ],
            )
        if changes.conflicts:
            await conn.executemany(
                """INSERT INTO crm_conflicts (portal, contact_id, field, reason, current_value,
                       proposed_value, answer_id, action_id)
                   VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)
                   ON CONFLICT (action_id, field, reason) DO NOTHING""",
                [
                    (
                        c.portal,
                        c.contact_id,
                        c.field,
                        c.reason,
                        _dump(c.current),
                        _dump(c.proposed),
                        c.answer_id,
                        c.action_id,
                    )
                    for c in changes.conflicts
                ],
            )
        if changes.intents:
            await conn.executemany(
                """UPDATE crm_actions SET intent = $2::jsonb, updated_at = now()
                   WHERE action_id = $1""",
                [
                    (action_id, _dump([w.to_json() for w in writes]) if writes else None)
                    for action_id, writes in changes.intents.items()
                ],
            )
        if changes.repairs:
            await conn.executemany(
                """UPDATE crm_actions
                   SET repairs = $2::jsonb, outcome = $3, details = $4::jsonb, intent = NULL,
                       updated_at = now()
                   WHERE action_id = $1""",
                [
                    (action_id, _dump([r.to_json() for r in repairs]), outcome, _dump(details))
                    for action_id, (repairs, outcome, details) in changes.repairs.items()
                ],
            )
        if changes.completions:
            events = changes.completions
            await outbox.execute(
                conn,
                _COMPLETE,
                events,
                action_ids=[e.action_id for e in events],
                outcomes=[e.outcome for e in events],
                entity_types=[e.entity_type for e in events],
                entity_ids=[e.entity_id for e in events],
                details=[_dump(e.details) for e in events],
            )


def _complete_statement() -> QueuingStatement:
    """Actions done and their `crm.written` events queued, in one statement."""
    b = StatementBuilder()
    ids, outcomes, types, entities, details = b.params(
        "action_ids", "outcomes", "entity_types", "entity_ids", "details"
    )
    return b.build(f"""
WITH done AS (
    UPDATE crm_actions a
    SET state = 'done', outcome = c.outcome, entity_type = c.entity_type, entity_id = c.entity_id,
        details = c.details, intent = NULL, repairs = NULL, last_error = NULL, done_at = now(),
        updated_at = now()
    FROM unnest({ids}::text[], {outcomes}::text[], {types}::text[], {entities}::bigint[],
                {details}::jsonb[])
        AS c (action_id, outcome, entity_type, entity_id, details)
    WHERE a.action_id = c.action_id AND a.state = 'pending'),
{b.queue()}
SELECT 1""")  # noqa: S608 - placeholders only, no values


_COMPLETE = _complete_statement()


async def record_undo(conn: Conn, write: WriteView) -> int:
    """Record that `write` was undone (its before-value is back): the audit row, the link, and
    the ledger (the field is ours again only if the before-value was ours). Returns its id."""
    async with conn.transaction():
        undo_id: int = await conn.fetchval(
            """INSERT INTO crm_contact_writes (portal, contact_id, field, before_value,
                   after_value, before_ours, kind, answer_id, action_id, undo_of)
               VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, true, 'undo', $6, $7, $8)
               RETURNING id""",
            write.portal,
            write.contact_id,
            write.field,
            _dump(write.after),
            _dump(write.before),
            write.answer_id,
            write.action_id,
            write.id,
        )
        await conn.execute(
            "UPDATE crm_contact_writes SET undone_by = $2 WHERE id = $1", write.id, undo_id
        )
        await conn.execute(
            """UPDATE crm_field_ledger SET owned_value = $4::jsonb, changed_at = now()
               WHERE portal = $1 AND contact_id = $2 AND field = $3""",
            write.portal,
            write.contact_id,
            write.field,
            _dump(write.before) if write.before_ours else None,
        )
    return undo_id
