"""The follow-up's SQL: `dispatch_followups` (migrations/0610_dispatch_followups.sql), written
only by dispatch's follower (docs/dispatch.md, Follow-up). What others read of it is in
`read.py`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.dispatch.followup import Change, EntityState, Escalation, Followed
from shared.db import Conn
from shared.dispatch_config import SlaUntil

COLUMNS = """follow_id, portal, action, action_id, entity_type, entity_id, responsible_id,
    manager_id, contact_id, deal_id, answer_id, request_id, state, outcome, status, created_at,
    first_change_at, closed_at, reads, last_read_at, next_read_at, stopped_at, sla_hours,
    sla_working_hours, sla_until, due_at, escalation, escalated_at, escalated_to,
    escalation_task_id, escalation_reason, updated_at"""


@dataclass(frozen=True)
class FollowRow:
    """A row of `dispatch_followups`."""

    follow_id: uuid.UUID
    portal: str
    action: str
    action_id: str
    entity_type: str
    entity_id: int
    responsible_id: int | None
    manager_id: int | None
    contact_id: int | None
    deal_id: int | None
    answer_id: str | None
    request_id: uuid.UUID | None
    state: EntityState
    outcome: str | None
    status: str | None
    created_at: datetime
    first_change_at: datetime | None
    closed_at: datetime | None
    reads: int
    last_read_at: datetime | None
    next_read_at: datetime | None
    stopped_at: datetime | None
    sla_hours: float | None
    sla_working_hours: bool | None
    sla_until: SlaUntil | None
    due_at: datetime | None
    escalation: Escalation | None
    escalated_at: datetime | None
    escalated_to: int | None
    escalation_task_id: int | None
    escalation_reason: str | None
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> FollowRow:
        return cls(**dict(row))

    def followed(self) -> Followed:
        return Followed(
            action=self.action,
            entity_type=self.entity_type,
            state=self.state,
            created_at=self.created_at,
            first_change_at=self.first_change_at,
            closed_at=self.closed_at,
            last_read_at=self.last_read_at,
            responsible_id=self.responsible_id,
            status=self.status,
            due_at=self.due_at,
            sla_hours=self.sla_hours,
            sla_working_hours=self.sla_working_hours,
            sla_until=self.sla_until,
            escalation=self.escalation,
        )


@dataclass(frozen=True)
class NewFollowup:
    """A lead or task to follow, from crm_sync's outcome."""

    follow_id: uuid.UUID
    portal: str
    action: str
    action_id: str
    entity_type: str
    entity_id: int
    responsible_id: int | None
    manager_id: int | None
    contact_id: int | None
    deal_id: int | None
    answer_id: str | None
    request_id: uuid.UUID | None
    created_at: datetime
    next_read_at: datetime
    sla_hours: float | None
    sla_working_hours: bool | None
    sla_until: SlaUntil | None
    due_at: datetime | None


async def record(conn: Conn, new: NewFollowup) -> bool:
    """Start following; False when the outcome was seen before (one row per action)."""
    done = await conn.fetchval(
        """INSERT INTO dispatch_followups
               (follow_id, portal, action, action_id, entity_type, entity_id, responsible_id,
                manager_id, contact_id, deal_id, answer_id, request_id, created_at, next_read_at,
                sla_hours, sla_working_hours, sla_until, due_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18, $13)
           ON CONFLICT DO NOTHING RETURNING true""",
        new.follow_id,
        new.portal,
        new.action,
        new.action_id,
        new.entity_type,
        new.entity_id,
        new.responsible_id,
        new.manager_id,
        new.contact_id,
        new.deal_id,
        new.answer_id,
        new.request_id,
        new.created_at,
        new.next_read_at,
        new.sla_hours,
        new.sla_working_hours,
        new.sla_until,
        new.due_at,
    )
    return bool(done)


async def get(conn: Conn, follow: uuid.UUID, *, lock: bool = False) -> FollowRow | None:
    lock_clause = " FOR UPDATE" if lock else ""
    sql = f"SELECT {COLUMNS} FROM dispatch_followups WHERE follow_id = $1{lock_clause}"  # noqa: S608
    row = await conn.fetchrow(sql, follow)
    return None if row is None else FollowRow.of(row)


async def claim_reads(
    conn: Conn, now: datetime, limit: int, lease: timedelta, portals: tuple[str, ...] | None
) -> list[FollowRow]:
    """The follow-ups of the portals served (None: the one portal served, whichever) due for a
    read at `now`, claimed for `lease` (another replica skips them; a read that fails is tried
    again when the lease ends). A row's `next_read_at` is its claim: `apply_read` takes it."""
    rows = await conn.fetch(
        f"""UPDATE dispatch_followups SET next_read_at = $3, read_lease = $3
            WHERE follow_id IN (
                SELECT follow_id FROM dispatch_followups
                WHERE next_read_at <= $1 AND ($4::text[] IS NULL OR portal = ANY($4::text[]))
                ORDER BY next_read_at LIMIT $2
                FOR UPDATE SKIP LOCKED)
            RETURNING {COLUMNS}""",  # noqa: S608 - fixed column list, values are $n
        now,
        limit,
        now + lease,
        None if portals is None else list(portals),
    )
    return [FollowRow.of(row) for row in rows]


async def read_now(conn: Conn, portal: str, entity_type: str, entity_id: int, now: datetime) -> int:
    """Make the follow-ups of a lead or task the portal says changed due for a read at `now`
    (those still read and not due already); how many. A row claimed by a read in flight keeps
    its claim and gets the request (`read_requested_at`): `apply_read` makes it due again."""
    done = await conn.execute(
        """UPDATE dispatch_followups
           SET read_requested_at = $4,
               next_read_at = CASE WHEN next_read_at = read_lease THEN next_read_at ELSE $4 END
           WHERE entity_type = $2 AND entity_id = $3 AND portal = $1 AND next_read_at > $4""",
        portal,
        entity_type,
        entity_id,
        now,
    )
    return int(done.split()[-1])


async def apply_read(
    conn: Conn,
    row: FollowRow,
    change: Change,
    *,
    now: datetime,
    next_read_at: datetime | None,
) -> bool:
    """Record the outcome of the read claimed at `now` (`claim_reads` returned `row`) and when to
    read again (None: no more reads; the time of a request that came after the claim, when there
    are more). False, nothing written, when the claim is no longer held: its lease ended and
    another read claimed the row (a newer read, whose outcome stays)."""
    done = await conn.fetchval(
        """UPDATE dispatch_followups
           SET state = $2, outcome = $3, status = $4, responsible_id = $5,
               first_change_at = $6, closed_at = $7, reads = reads + 1, last_read_at = $8,
               next_read_at = CASE WHEN $9::timestamptz IS NOT NULL AND read_requested_at > $8
                                   THEN least(read_requested_at, $9) ELSE $9 END,
               read_lease = NULL,
               stopped_at = CASE WHEN $9::timestamptz IS NULL AND $2::text <> 'closed'
                                 THEN $8::timestamptz END,
               updated_at = $8
           WHERE follow_id = $1 AND next_read_at = $10 AND read_lease = $10
           RETURNING true""",
        row.follow_id,
        change.state,
        change.outcome,
        change.status,
        change.responsible_id,
        change.first_change_at,
        change.closed_at,
        now,
        next_read_at,
        row.next_read_at,
    )
    return bool(done)


async def escalation_candidates(
    conn: Conn, now: datetime, limit: int, portals: tuple[str, ...] | None
) -> list[FollowRow]:
    """Follow-ups of the portals served (None: whichever) past their deadline, read since,
    never escalated, not closed and no escalation task themselves: locked for this transaction
    (the decision itself is `followup.escalation_due`)."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM dispatch_followups
            WHERE due_at <= $1 AND escalation IS NULL AND closed_at IS NULL
              AND last_read_at >= due_at AND action <> 'escalation'
              AND ($3::text[] IS NULL OR portal = ANY($3::text[]))
            ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""",  # noqa: S608 - fixed columns
        now,
        limit,
        None if portals is None else list(portals),
    )
    return [FollowRow.of(row) for row in rows]


async def mark_escalation(
    conn: Conn,
    follow: uuid.UUID,
    escalation: Escalation,
    *,
    now: datetime,
    to: int | None = None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE dispatch_followups
           SET escalation = $2, escalated_at = $3, escalated_to = $4, escalation_reason = $5,
               updated_at = $3
           WHERE follow_id = $1""",
        follow,
        escalation,
        now,
        to,
        reason,
    )


async def escalation_written(
    conn: Conn,
    follow: uuid.UUID,
    *,
    created: bool,
    task_id: int | None,
    reason: str | None,
    now: datetime,
) -> bool:
    """Record crm_sync's outcome of the escalation task; False when recorded already (or no such
    follow-up)."""
    done = await conn.fetchval(
        """UPDATE dispatch_followups
           SET escalation = $2, escalation_task_id = $3, escalation_reason = $4, updated_at = $5
           WHERE follow_id = $1 AND escalation = 'queued' RETURNING true""",
        follow,
        "created" if created else "failed",
        task_id,
        reason,
        now,
    )
    return bool(done)


async def request_manager(conn: Conn, request_id: uuid.UUID) -> tuple[str, int | None] | None:
    """A survey request's portal and responsible (the manager of its call task)."""
    row = await conn.fetchrow(
        "SELECT portal, responsible_id FROM dispatch_requests WHERE request_id = $1", request_id
    )
    return None if row is None else (row["portal"], row["responsible_id"])
