"""crm_sync's read module: the audit and conflict views of its tables, for `nps conflicts`,
`nps audit` and `nps undo`, the dashboard's ops view, and the ops tooling's checks of the
pipeline's end state (docs/architecture.md, "Tables and their owners").

Field values are stored as JSON exactly as read from or sent to the portal; SQL NULL means
"no value". Every value is a `$n` parameter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Conn


def load_value(raw: str | None) -> Any:
    """A stored field value (JSON text; None for SQL NULL) as Python."""
    return None if raw is None else json.loads(raw)


# --- conflicts: values left alone -----------------------------------------------------------


async def conflict_count(
    conn: Conn,
    *,
    portal: str | None,
    answer_ids: Sequence[str] | None = None,
    contact_id: int | None = None,
) -> int | None:
    """How many values were left alone on `portal` (None: on every portal), of `answer_ids` and
    of `contact_id` when given; None when crm_sync's table is not in this database (not migrated
    yet)."""
    if await conn.fetchval("SELECT to_regclass('crm_conflicts')") is None:
        return None
    count = await conn.fetchval(
        """SELECT count(*) FROM crm_conflicts
           WHERE ($1::text IS NULL OR portal = $1)
             AND ($2::text[] IS NULL OR answer_id = ANY($2::text[]))
             AND ($3::bigint IS NULL OR contact_id = $3)""",
        portal,
        None if answer_ids is None else list(answer_ids),
        contact_id,
    )
    return int(count)


@dataclass(frozen=True)
class ConflictView:
    id: int
    portal: str
    contact_id: int
    field: str
    reason: str
    current: Any
    proposed: Any
    answer_id: str
    action_id: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


async def list_conflicts(
    conn: Conn, *, portal: str | None, contact_id: int | None = None, limit: int = 1000
) -> list[ConflictView]:
    """The values left alone on `portal` (None: on every portal), newest first."""
    rows = await conn.fetch(
        """SELECT id, portal, contact_id, field, reason, current_value, proposed_value,
                  answer_id, action_id, created_at
           FROM crm_conflicts
           WHERE ($1::bigint IS NULL OR contact_id = $1) AND ($2::text IS NULL OR portal = $2)
           ORDER BY id DESC LIMIT $3""",
        contact_id,
        portal,
        limit,
    )
    return [
        ConflictView(
            id=row["id"],
            portal=row["portal"],
            contact_id=row["contact_id"],
            field=row["field"],
            reason=row["reason"],
            current=load_value(row["current_value"]),
            proposed=load_value(row["proposed_value"]),
            answer_id=row["answer_id"],
            action_id=row["action_id"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class WriteView:
    id: int
    portal: str
    contact_id: int
    field: str
    before: Any
    after: Any
    before_ours: bool
    kind: str
    answer_id: str | None
    action_id: str | None
    undo_of: int | None
    undone_by: int | None
    written_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "written_at": self.written_at.isoformat()}


_SELECT_WRITES = (
    "SELECT id, portal, contact_id, field, before_value, after_value, before_ours, kind,"
    " answer_id, action_id, undo_of, undone_by, written_at FROM crm_contact_writes"
)
"""The columns `_write_view` reads; callers append their WHERE clause (values as `$n`)."""


def _write_view(row: asyncpg.Record) -> WriteView:
    return WriteView(
        id=row["id"],
        portal=row["portal"],
        contact_id=row["contact_id"],
        field=row["field"],
        before=load_value(row["before_value"]),
        after=load_value(row["after_value"]),
        before_ours=row["before_ours"],
        kind=row["kind"],
        answer_id=row["answer_id"],
        action_id=row["action_id"],
        undo_of=row["undo_of"],
        undone_by=row["undone_by"],
        written_at=row["written_at"],
    )


async def contact_writes(conn: Conn, contact_id: int, *, portal: str) -> list[WriteView]:
    """Our writes into contact `contact_id` of `portal`, oldest first."""
    rows = await conn.fetch(
        _SELECT_WRITES + " WHERE contact_id = $1 AND portal = $2 ORDER BY id",
        contact_id,
        portal,
    )
    return [_write_view(row) for row in rows]


async def answer_writes(conn: Conn, answer_id: str, portal: str) -> list[WriteView]:
    """Every contact-field write of one answer on `portal` (undos included), oldest first."""
    rows = await conn.fetch(
        _SELECT_WRITES + " WHERE answer_id = $1 AND portal = $2 ORDER BY id", answer_id, portal
    )
    return [_write_view(row) for row in rows]


async def portal_writes(conn: Conn, portal: str) -> list[WriteView]:
    """Our writes into the contacts of `portal`, oldest first."""
    rows = await conn.fetch(_SELECT_WRITES + " WHERE portal = $1 ORDER BY id", portal)
    return [_write_view(row) for row in rows]


async def get_write(conn: Conn, write_id: int) -> WriteView | None:
    row = await conn.fetchrow(
        _SELECT_WRITES + " WHERE id = $1",
        write_id,
    )
    return None if row is None else _write_view(row)


async def later_write(conn: Conn, write: WriteView) -> WriteView | None:
    """The newest write to the same field after `write`, if any."""
    row = await conn.fetchrow(
        _SELECT_WRITES
        + " WHERE portal = $1 AND contact_id = $2 AND field = $3 AND id > $4"
        + " ORDER BY id DESC LIMIT 1",
        write.portal,
        write.contact_id,
        write.field,
        write.id,
    )
    return None if row is None else _write_view(row)


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionView:
    """A CRM action crm_sync took on: `pending` until done, then its outcome."""

    action_id: str
    action: str
    answer_id: str
    state: str
    outcome: str | None
    created_at: datetime
    done_at: datetime | None


async def actions(
    conn: Conn, portal: str | None, answer_ids: Sequence[str] | None = None
) -> list[ActionView]:
    """The actions on `portal` (None: on every portal), of `answer_ids` when given."""
    rows = await conn.fetch(
        """SELECT action_id, action, answer_id, state, outcome, created_at, done_at
           FROM crm_actions
           WHERE ($1::text IS NULL OR portal = $1)
             AND ($2::text[] IS NULL OR answer_id = ANY($2::text[]))""",
        portal,
        None if answer_ids is None else list(answer_ids),
    )
    return [
        ActionView(
            action_id=row["action_id"],
            action=row["action"],
            answer_id=row["answer_id"],
            state=row["state"],
            outcome=row["outcome"],
            created_at=row["created_at"],
            done_at=row["done_at"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class ActionStates:
    done: int
    pending: int


async def action_states(conn: Conn, portal: str | None) -> ActionStates:
    """How many actions on `portal` (None: on every portal) are done and how many pending."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE state = 'done') AS done,
                  count(*) FILTER (WHERE state = 'pending') AS pending
           FROM crm_actions WHERE ($1::text IS NULL OR portal = $1)""",
        portal,
    )
    assert row is not None
    return ActionStates(done=int(row["done"]), pending=int(row["pending"]))


@dataclass(frozen=True)
class CommandOutcome:
    """Where one of dispatch's commands (a call task, …) stands: `pending` until carried out,
    then its outcome (`created`, `found`, …, or `failed` with the portal's `reason`) and the
    entity it made."""

    command_id: str
    state: str
    outcome: str | None
    entity_id: int | None
    reason: str | None


async def command_outcomes(
    conn: Conn, portal: str | None, command_ids: Sequence[str]
) -> dict[str, CommandOutcome]:
    """The commands of `command_ids` crm_sync has taken on for `portal` (None: for any portal),
    by command id."""
    rows = await conn.fetch(
        """SELECT action_id, state, outcome, entity_id, details->>'reason' AS reason
           FROM crm_actions
           WHERE action_id = ANY($1::text[]) AND ($2::text IS NULL OR portal = $2)""",
        list(command_ids),
        portal,
    )
    return {
        row["action_id"]: CommandOutcome(
            command_id=row["action_id"],
            state=row["state"],
            outcome=row["outcome"],
            entity_id=row["entity_id"],
            reason=row["reason"],
        )
        for row in rows
    }


# --- survey page answers --------------------------------------------------------------------


async def survey_item_requests(
    conn: Conn, portal: str | None, item_ids: Sequence[int]
) -> list[tuple[int, uuid.UUID]]:
    """(item id, survey request id) of each survey page request written into an item (or an NPS
    deal) of `item_ids` of `portal` (None: of any portal; `crm_survey_items`; the item's `XML_ID`
    is `b24-nps-survey:<request id>`). An item id may come twice: a smart-process item and a
    deal may share it."""
    rows = await conn.fetch(
        """SELECT item_id, request_id FROM crm_survey_items
           WHERE item_id = ANY($1::bigint[]) AND ($2::text IS NULL OR portal = $2)""",
        list(item_ids),
        portal,
    )
    return [(row["item_id"], row["request_id"]) for row in rows]


async def request_items(
    conn: Conn, portal: str | None, request_ids: Sequence[uuid.UUID]
) -> list[int]:
    """The items (or NPS deals) the survey page requests `request_ids` of `portal` (None: of any
    portal) were written into (`crm_survey_items`), by id."""
    rows = await conn.fetch(
        """SELECT DISTINCT item_id FROM crm_survey_items
           WHERE request_id = ANY($1::uuid[]) AND ($2::text IS NULL OR portal = $2)
           ORDER BY item_id""",
        list(request_ids),
        portal,
    )
    return [row["item_id"] for row in rows]
