"""What others read of the follow-up (docs/dispatch.md, Follow-up): the dashboard's "loop closed"
figures per action and per manager, the open overdue ones, the followed leads and tasks, and
the digest's overdue list. To be exposed through `services/dispatch/read.py` (the one door for
readers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.db import Conn

FollowupGroup = Literal["action", "manager"]

OVERDUE_SQL = (
    "f.closed_at IS NULL AND f.due_at <= $1 AND (f.sla_until = 'closed' OR f.state = 'open')"
)
"""An open overdue follow-up at `$1`: past its deadline, its SLA not met."""


@dataclass(frozen=True)
class FollowupFilter:
    """Which follow-ups: a portal, an action, a manager, created in [`since`, `until`)."""

    portal: str | None = None
    action: str | None = None
    manager: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def _where(where: FollowupFilter, params: list[Any]) -> str:
    conditions = ["TRUE"]

    def add(template: str, value: Any) -> None:
        params.append(value)
        conditions.append(template.format(f"${len(params)}"))

    if where.portal is not None:
        add("f.portal = {}", where.portal)
    if where.action is not None:
        add("f.action = {}", where.action)
    if where.manager is not None:
        add("f.manager_id = {}", where.manager)
    if where.since is not None:
        add("f.created_at >= {}", where.since)
    if where.until is not None:
        add("f.created_at < {}", where.until)
    return " AND ".join(conditions)


async def loop_closed(
    conn: Conn, now: datetime, where: FollowupFilter, by: FollowupGroup = "action"
) -> list[dict[str, Any]]:
    """Per action (or per manager: `manager_id`, null when unknown): how many were followed,
    open, in work and closed, the loop closed % (closed of followed), the median hours to the
    first change and to close (of those that changed or closed), how many are open and overdue
    at `now`, and how many were escalated."""
    params: list[Any] = [now]
    condition = _where(where, params)
    group = "f.action" if by == "action" else "f.manager_id"
    rows = await conn.fetch(
        f"""SELECT {group} AS key,
                   count(*) AS followed,
                   count(*) FILTER (WHERE f.state = 'open') AS open,
                   count(*) FILTER (WHERE f.state = 'in_work') AS in_work,
                   count(*) FILTER (WHERE f.state = 'closed') AS closed,
                   round(100.0 * count(*) FILTER (WHERE f.state = 'closed') / count(*), 1)
                       AS closed_pct,
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM f.first_change_at - f.created_at) / 3600)
                       AS median_hours_to_change,
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM f.closed_at - f.created_at) / 3600)
                       AS median_hours_to_close,
                   count(*) FILTER (WHERE {OVERDUE_SQL}) AS overdue,
                   count(*) FILTER (WHERE f.escalation IN ('queued', 'created')) AS escalated
            FROM dispatch_followups f WHERE {condition}
            GROUP BY {group} ORDER BY {group} NULLS LAST""",  # noqa: S608 - fixed fragments, values are $n
        *params,
    )
    return [
        {
            **dict(row),
            "closed_pct": None if row["closed_pct"] is None else float(row["closed_pct"]),
            "median_hours_to_change": _hours(row["median_hours_to_change"]),
            "median_hours_to_close": _hours(row["median_hours_to_close"]),
        }
        for row in rows
    ]


def _hours(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)


_LIST_COLUMNS = """f.follow_id, f.portal, f.action, f.entity_type, f.entity_id, f.responsible_id,
    f.manager_id, f.contact_id, f.deal_id, f.state, f.outcome, f.status, f.created_at,
    f.first_change_at, f.closed_at, f.last_read_at, f.stopped_at, f.due_at, f.sla_hours,
    f.sla_until, f.escalation, f.escalated_at, f.escalated_to, f.escalation_task_id,
    f.escalation_reason"""


async def overdue(
    conn: Conn, now: datetime, where: FollowupFilter | None = None, *, limit: int = 100
) -> list[dict[str, Any]]:
    """The open overdue follow-ups at `now`, the longest overdue first, with `hours_overdue`."""
    params: list[Any] = [now]
    condition = _where(where or FollowupFilter(), params)
    params.append(limit)
    rows = await conn.fetch(
        f"""SELECT {_LIST_COLUMNS},
                   round((extract(epoch FROM $1 - f.due_at) / 3600)::numeric, 1) AS hours_overdue
            FROM dispatch_followups f WHERE {OVERDUE_SQL} AND {condition}
            ORDER BY f.due_at, f.entity_id LIMIT ${len(params)}""",  # noqa: S608 - fixed fragments, values are $n
        *params,
    )
    return [{**dict(row), "hours_overdue": float(row["hours_overdue"])} for row in rows]


async def overdue_count(conn: Conn, now: datetime, where: FollowupFilter | None = None) -> int:
    params: list[Any] = [now]
    condition = _where(where or FollowupFilter(), params)
    count: int = await conn.fetchval(
        f"SELECT count(*) FROM dispatch_followups f WHERE {OVERDUE_SQL} AND {condition}",  # noqa: S608 - fixed fragments
        *params,
    )
    return count


async def followups(
    conn: Conn,
    where: FollowupFilter,
    *,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The followed leads and tasks `where` selects (optionally in one `state`), newest first."""
    params: list[Any] = []
    condition = _where(where, params)
    if state is not None:
        params.append(state)
        condition += f" AND f.state = ${len(params)}"
    params.extend([limit, offset])
    rows = await conn.fetch(
        f"""SELECT {_LIST_COLUMNS} FROM dispatch_followups f WHERE {condition}
            ORDER BY f.created_at DESC, f.entity_id DESC
            LIMIT ${len(params) - 1} OFFSET ${len(params)}""",  # noqa: S608 - fixed fragments, values are $n
        *params,
    )
    return [dict(row) for row in rows]
