"""What others read of dispatch's register (the CLI, the dashboard, the harness): the requests
with their states (all, or one deal's: the deal card's tab), and the counts per state
(docs/dispatch.md, The register); for the dashboard's "Asked" page the response funnel (sent,
opened, answered) per day, survey and responsible, the requests awaiting an answer and those that
ended unanswered, and every request sent (its CSV);
for the all-ratings page when the survey behind an answer was sent; the follow-up of the leads
and tasks b24-nps created (docs/dispatch.md, Follow-up): "loop closed" figures per action, per
manager and over a whole selection, the open overdue ones (a page, or all of them for a CSV), the
followed list, the digest's overdue list."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from shared.db import Conn
from shared.dispatch_config import ESCALATION_ACTION

ESCALATION_SUFFIX = f":{ESCALATION_ACTION}:0"
"""What an escalation task's action id adds to the escalated follow-up's id
(`followup.escalation_command_id`)."""


@dataclass(frozen=True)
class RegisterFilter:
    portal: str | None = None
    state: str | None = None
    survey: str | None = None
    contact_id: int | None = None
    since: datetime | None = None
    limit: int = 50


async def requests(conn: Conn, where: RegisterFilter) -> list[dict[str, Any]]:
    """The register's requests, newest first, as plain values."""
    rows = await conn.fetch(
        """SELECT request_id, portal, source, ref, survey, kind, sku, contact_id,
                  responsible_id, sale_deal_id, nps_deal_id, lang, channel, state, reason,
                  sends, created_at, sent_at, last_sent_at, opened_at, answered_at, closed_at,
                  call_task_id, due_at
           FROM dispatch_requests
           WHERE ($1::text IS NULL OR portal = $1) AND ($2::text IS NULL OR state = $2)
             AND ($3::text IS NULL OR survey = $3) AND ($4::bigint IS NULL OR contact_id = $4)
             AND ($5::timestamptz IS NULL OR created_at >= $5)
           ORDER BY created_at DESC, request_id LIMIT $6""",
        where.portal,
        where.state,
        where.survey,
        where.contact_id,
        where.since,
        where.limit,
    )
    return [dict(row) for row in rows]


async def deal_requests(conn: Conn, portal: str | None, deal_id: int) -> list[dict[str, Any]]:
    """The requests of one deal of `portal` (None: of any portal), oldest first: those asked
    for it (a sale's, a robot's on the deal: `sale_deal_id`) and the one whose NPS deal it is
    (`nps_deal_id`); the deal card's tab shows how they stand."""
    rows = await conn.fetch(
        """SELECT request_id, portal, survey, kind, channel, state, reason, sale_deal_id,
                  nps_deal_id, created_at, sent_at, opened_at, answered_at, closed_at
           FROM dispatch_requests
           WHERE ($1::text IS NULL OR portal = $1)
             AND (sale_deal_id = $2::bigint OR nps_deal_id = $2::bigint)
           ORDER BY created_at, request_id""",
        portal,
        deal_id,
    )
    return [dict(row) for row in rows]


async def state_counts(conn: Conn, portal: str | None) -> dict[str, int]:
    """How many requests of `portal` (None: of every portal) are in each state."""
    rows = await conn.fetch(
        """SELECT state, count(*) AS n FROM dispatch_requests
           WHERE $1::text IS NULL OR portal = $1 GROUP BY state""",
        portal,
    )
    return {row["state"]: row["n"] for row in rows}


async def sends(conn: Conn, request_id: Any) -> list[dict[str, Any]]:
    """A request's sends (0: the first message, n: the n-th reminder)."""
    rows = await conn.fetch(
        """SELECT n, channel, state, reason, started_at, finished_at FROM dispatch_sends
           WHERE request_id = $1 ORDER BY n""",
        request_id,
    )
    return [dict(row) for row in rows]


# --- the dashboard's "Asked" page (docs/dashboard.md, Asked and not answered) ---------------

AWAITING_STATES = ("sent", "reminded", "opened")
"""A request in one of these states and not closed waits for the customer's answer."""


@dataclass(frozen=True)
class AskedFilter:
    """Which requests the dashboard's "Asked" page counts and lists: those whose first message
    went out (`sent_at`) on the portal's local days `start`..`end` (inclusive; `zone` is the
    portal's IANA time zone), narrowed to a portal, a survey (a category id, or its name in any
    case), a product (SKU) and a responsible employee."""

    portal: str | None = None
    survey: str | None = None
    sku: str | None = None
    responsible_id: int | None = None
    start: date | None = None
    end: date | None = None
    zone: str = "UTC"


def _asked_where(where: AskedFilter, params: list[Any]) -> str:
    conditions = ["r.sent_at IS NOT NULL"]

    def add(template: str, value: Any) -> None:
        params.append(value)
        conditions.append(template.format(f"${len(params)}"))

    if where.portal is not None:
        add("r.portal = {}", where.portal)
    if where.survey is not None:
        if where.survey.isascii() and where.survey.isdigit():
            add("r.category_id = {}::int", int(where.survey))
        else:
            add("lower(r.survey) = lower({})", where.survey)
    if where.sku is not None:
        add("r.sku = {}", where.sku)
    if where.responsible_id is not None:
        add("r.responsible_id = {}::bigint", where.responsible_id)
    if where.start is not None or where.end is not None:
        params.append(where.zone)
        zone = f"${len(params)}::text"
        if where.start is not None:
            add(f"r.sent_at >= ({{}}::date)::timestamp AT TIME ZONE {zone}", where.start)
        if where.end is not None:
            add(
                f"r.sent_at < ({{}}::date + 1)::timestamp AT TIME ZONE {zone}",
                where.end,
            )
    return " AND ".join(conditions)


_AWAITING = "r.closed_at IS NULL AND r.state IN ({})".format(
    ", ".join(f"'{state}'" for state in AWAITING_STATES)
)
"""A request awaiting an answer, in SQL (fixed text: the states are constants)."""
_ASKED_COLUMNS = """r.request_id, r.portal, r.survey, r.kind, r.sku, r.contact_id,
    r.responsible_id, r.sale_deal_id, r.nps_deal_id, r.channel, r.state, r.reason, r.sends,
    r.due_at, r.created_at, r.sent_at, r.last_sent_at, r.opened_at, r.answered_at, r.closed_at,
    r.call_task_id"""


async def funnel(conn: Conn, where: AskedFilter) -> list[dict[str, Any]]:
    """Of the requests `where` selects, per local day of the first message, survey and
    responsible: how many were sent, opened, answered, still awaited, and unanswered."""
    params: list[Any] = []
    condition = _asked_where(where, params)
    params.append(where.zone)
    sql = f"""SELECT (r.sent_at AT TIME ZONE ${len(params)}::text)::date AS day, r.survey,
                     r.responsible_id, count(*) AS sent,
                     count(*) FILTER (WHERE r.opened_at IS NOT NULL) AS opened,
                     count(*) FILTER (WHERE r.answered_at IS NOT NULL) AS answered,
                     count(*) FILTER (WHERE {_AWAITING}) AS awaiting,
                     count(*) FILTER (WHERE r.state = 'unanswered') AS unanswered
              FROM dispatch_requests r WHERE {condition}
              GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""  # noqa: S608 - fixed fragments, values are $n
    async with conn.transaction(readonly=True):
        return [dict(row) for row in await conn.fetch(sql, *params)]


async def _listed(
    conn: Conn, where: AskedFilter, state: str, order: str, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    params: list[Any] = []
    condition = f"{_asked_where(where, params)} AND {state}"
    count_sql = f"SELECT count(*) FROM dispatch_requests r WHERE {condition}"  # noqa: S608
    params.append(limit)
    sql = (
        f"SELECT {_ASKED_COLUMNS} FROM dispatch_requests r WHERE {condition}"  # noqa: S608 - fixed fragments, values are $n
        f" ORDER BY {order} LIMIT ${len(params)}"
    )
    async with conn.transaction(readonly=True):
        total: int = await conn.fetchval(count_sql, *params[:-1])
        rows = await conn.fetch(sql, *params)
    return total, [dict(row) for row in rows]


async def awaiting(
    conn: Conn, where: AskedFilter, limit: int = 50
) -> tuple[int, list[dict[str, Any]]]:
    """How many requests `where` selects wait for an answer (sent, reminded or opened, not
    closed), and the `limit` that have waited longest."""
    return await _listed(conn, where, _AWAITING, "r.sent_at, r.request_id", limit)


async def unanswered(
    conn: Conn, where: AskedFilter, limit: int = 50
) -> tuple[int, list[dict[str, Any]]]:
    """How many requests `where` selects ended unanswered, and the `limit` latest to end so."""
    return await _listed(
        conn, where, "r.state = 'unanswered'", "r.closed_at DESC, r.request_id", limit
    )


async def asked(
    conn: Conn, where: AskedFilter, *, batch: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """Every request `where` selects, newest first message first, read through a cursor in one
    read-only transaction (the "Asked" page's CSV export)."""
    params: list[Any] = []
    condition = _asked_where(where, params)
    sql = (
        f"SELECT {_ASKED_COLUMNS} FROM dispatch_requests r WHERE {condition}"  # noqa: S608 - fixed fragments, values are $n
        " ORDER BY r.sent_at DESC, r.request_id"
    )
    async with conn.transaction(readonly=True):
        async for row in conn.cursor(sql, *params, prefetch=batch):
            yield dict(row)


@dataclass(frozen=True)
class AskedChoices:
    """The surveys (category id, name) and responsible employees the register holds."""

    surveys: tuple[tuple[int, str], ...]
    managers: tuple[int, ...]


async def asked_choices(conn: Conn, portal: str | None) -> AskedChoices:
    """What the "Asked" page's filters can choose from: the surveys and responsible employees of
    the requests sent (on `portal`, or on any)."""
    async with conn.transaction(readonly=True):
        surveys = await conn.fetch(
            """SELECT DISTINCT ON (category_id) category_id, survey FROM dispatch_requests
               WHERE sent_at IS NOT NULL AND ($1::text IS NULL OR portal = $1)
               ORDER BY category_id, survey""",
            portal,
        )
        managers = await conn.fetch(
            """SELECT DISTINCT responsible_id FROM dispatch_requests
               WHERE sent_at IS NOT NULL AND responsible_id IS NOT NULL
                 AND ($1::text IS NULL OR portal = $1)
               ORDER BY responsible_id""",
            portal,
        )
    return AskedChoices(
        surveys=tuple((row["category_id"], row["survey"]) for row in surveys),
        managers=tuple(row["responsible_id"] for row in managers),
    )


# --- when the survey behind an answer was sent ----------------------------------------------


@dataclass(frozen=True)
class SentRequest:
    """A request as an answer is traced back to it: its portal, kind (`deal`, `segment`) and
    when its first message went out (None: never sent)."""

    request_id: uuid.UUID
    portal: str
    kind: str
    sent_at: datetime | None


async def sent_requests(conn: Conn, request_ids: Sequence[uuid.UUID]) -> list[SentRequest]:
    """The requests of `request_ids` the register holds."""
    rows = await conn.fetch(
        """SELECT request_id, portal, kind, sent_at FROM dispatch_requests
           WHERE request_id = ANY($1::uuid[])""",
        list(request_ids),
    )
    return [SentRequest(**dict(row)) for row in rows]


async def deal_sent_at(
    conn: Conn, portal: str | None, deal_ids: Sequence[int]
) -> dict[tuple[str, int], datetime]:
    """When the deal survey behind each NPS deal of `deal_ids` was first sent ((portal, deal id)
    -> time; deals that no sent request created are left out)."""
    rows = await conn.fetch(
        """SELECT portal, nps_deal_id, min(sent_at) AS sent_at FROM dispatch_requests
           WHERE kind = 'deal' AND nps_deal_id = ANY($1::bigint[]) AND sent_at IS NOT NULL
             AND ($2::text IS NULL OR portal = $2)
           GROUP BY portal, nps_deal_id""",
        list(deal_ids),
        portal,
    )
    return {(row["portal"], row["nps_deal_id"]): row["sent_at"] for row in rows}


# -- follow-up -------------------------------------------------------------------------------

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


_LOOP_COLUMNS = f"""count(*) AS followed,
    count(*) FILTER (WHERE f.state = 'open') AS open,
    count(*) FILTER (WHERE f.state = 'in_work') AS in_work,
    count(*) FILTER (WHERE f.state = 'closed') AS closed,
    round(100.0 * count(*) FILTER (WHERE f.state = 'closed') / nullif(count(*), 0), 1)
        AS closed_pct,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY extract(epoch FROM f.first_change_at - f.created_at) / 3600)
        AS median_hours_to_change,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY extract(epoch FROM f.closed_at - f.created_at) / 3600)
        AS median_hours_to_close,
    count(*) FILTER (WHERE {OVERDUE_SQL}) AS overdue,
    count(*) FILTER (WHERE f.escalation IN ('queued', 'created')) AS escalated"""
"""The "loop closed" figures of a group of follow-ups (`$1` is the moment for `overdue`)."""


def _loop_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "closed_pct": None if row["closed_pct"] is None else float(row["closed_pct"]),
        "median_hours_to_change": _hours(row["median_hours_to_change"]),
        "median_hours_to_close": _hours(row["median_hours_to_close"]),
    }


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
        f"""SELECT {group} AS key, {_LOOP_COLUMNS}
            FROM dispatch_followups f WHERE {condition}
            GROUP BY {group} ORDER BY {group} NULLS LAST""",  # noqa: S608 - fixed fragments, values are $n
        *params,
    )
    return [_loop_row(dict(row)) for row in rows]


async def loop_closed_total(conn: Conn, now: datetime, where: FollowupFilter) -> dict[str, Any]:
    """The figures of `loop_closed` over every follow-up `where` selects (zeros and nulls when
    it selects none), with how many escalations are in each state: `escalation_queued`,
    `escalation_created`, `escalation_failed`, `escalation_skipped`; and
    `escalation_unfollowed`: of those created, the tasks made before escalation tasks were
    followed (no follow-up of their own: not in `loop_closed`'s `escalation` row)."""
    params: list[Any] = [now]
    condition = _where(where, params)
    row = await conn.fetchrow(
        f"""SELECT {_LOOP_COLUMNS},
                   count(*) FILTER (WHERE f.escalation = 'queued') AS escalation_queued,
                   count(*) FILTER (WHERE f.escalation = 'created') AS escalation_created,
                   count(*) FILTER (WHERE f.escalation = 'failed') AS escalation_failed,
                   count(*) FILTER (WHERE f.escalation = 'skipped') AS escalation_skipped,
                   count(*) FILTER (WHERE f.escalation = 'created' AND NOT EXISTS (
                       SELECT 1 FROM dispatch_followups e
                       WHERE e.action_id = f.follow_id::text || '{ESCALATION_SUFFIX}'))
                       AS escalation_unfollowed
            FROM dispatch_followups f WHERE {condition}""",  # noqa: S608 - fixed fragments, values are $n
        *params,
    )
    assert row is not None  # an aggregate without GROUP BY answers one row
    return _loop_row(dict(row))


def _hours(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)


_LIST_COLUMNS = """f.follow_id, f.portal, f.action, f.entity_type, f.entity_id, f.responsible_id,
    f.manager_id, f.contact_id, f.deal_id, f.state, f.outcome, f.status, f.created_at,
    f.first_change_at, f.closed_at, f.last_read_at, f.stopped_at, f.due_at, f.sla_hours,
    f.sla_working_hours, f.sla_until, f.escalation, f.escalated_at, f.escalated_to,
    f.escalation_task_id, f.escalation_reason"""


def _overdue_sql(now: datetime, where: FollowupFilter | None, params: list[Any]) -> str:
    params.append(now)
    condition = _where(where or FollowupFilter(), params)
    return f"""SELECT {_LIST_COLUMNS},
                   round((extract(epoch FROM $1 - f.due_at) / 3600)::numeric, 1) AS hours_overdue
            FROM dispatch_followups f WHERE {OVERDUE_SQL} AND {condition}
            ORDER BY f.due_at, f.entity_id"""  # noqa: S608 - fixed fragments, values are $n


def _overdue_row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "hours_overdue": float(row["hours_overdue"])}


async def overdue(
    conn: Conn, now: datetime, where: FollowupFilter | None = None, *, limit: int = 100
) -> list[dict[str, Any]]:
    """The open overdue follow-ups at `now`, the longest overdue first, with `hours_overdue`."""
    params: list[Any] = []
    sql = _overdue_sql(now, where, params)
    params.append(limit)
    rows = await conn.fetch(f"{sql} LIMIT ${len(params)}", *params)
    return [_overdue_row(dict(row)) for row in rows]


async def all_overdue(
    conn: Conn, now: datetime, where: FollowupFilter | None = None, *, batch: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """Every open overdue follow-up at `now` in `overdue`'s order, read through a cursor in one
    read-only transaction (the dashboard's follow-up CSV export)."""
    params: list[Any] = []
    sql = _overdue_sql(now, where, params)
    async with conn.transaction(readonly=True):
        async for row in conn.cursor(sql, *params, prefetch=batch):
            yield _overdue_row(dict(row))


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
