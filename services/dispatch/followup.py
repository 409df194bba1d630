"""Follow-up decisions (docs/dispatch.md, Follow-up): what a lead's status or a task's status
means (open, in work, closed), when a change happened, when an entity is read next, its SLA's
deadline in working hours, and whether its one escalation is due. Pure: no I/O; the clock comes
in as an argument.

- **Leads**: the statuses of `crm.status.list` with `ENTITY_ID` `STATUS`: success (`S`, e.g.
  `CONVERTED`) and failure (`F`, e.g. `JUNK`) are closed; the first in-progress status by sort
  (`NEW`) is open; any other in-progress status is in work. Nothing is typed by hand.
- **Tasks** (`STATUS` of `tasks.task.list`): 1 new and 2 pending are open; 3 in progress and 6
  deferred are in work; 4 (supposedly completed, awaiting the creator's control) and 5
  (completed) are closed with success; 7 (declined) is closed with failure.
- An entity a read no longer returns was deleted: closed, outcome `deleted`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from shared.dispatch_config import (
    ESCALATION_ACTION,
    WEEKDAYS,
    Followup,
    Sla,
    SlaUntil,
    WorkingHours,
)
from shared.events import derived_id

EntityState = Literal["open", "in_work", "closed"]
Outcome = Literal["success", "failure", "deleted"]
Escalation = Literal["queued", "created", "failed", "skipped"]
ESCALATION = ESCALATION_ACTION
"""The action part of an escalation's command id (`<follow id>:escalation:0`), and the action of
the escalation task's own follow-up."""
LEAD_SELECT = ("ID", "STATUS_ID", "ASSIGNED_BY_ID", "DATE_MODIFY")
TASK_SELECT = ("ID", "STATUS", "RESPONSIBLE_ID", "CHANGED_DATE", "CLOSED_DATE")
IDS_PER_READ = 50
"""Ids per list call: one page of a list method."""
AGE_DIVISOR = 6
"""An entity is read again after a sixth of its age (within the configured bounds)."""

TASK_OPEN = frozenset({1, 2})
TASK_IN_WORK = frozenset({3, 6})
TASK_DONE = frozenset({4, 5})
TASK_DECLINED = frozenset({7})


def follow_id(action_id: str) -> uuid.UUID:
    """The follow-up's id: one per action (a redelivered outcome finds the same row)."""
    return derived_id("followup", action_id)


def escalation_command_id(follow: uuid.UUID) -> str:
    """The command id of a follow-up's escalation task: `<follow id>:escalation:0`, the shape of
    dispatch's command ids (`<request id>:<action>:<n>`), with an action of its own."""
    return f"{follow}:{ESCALATION}:0"


def command_action(command_id: str) -> str | None:
    """The action part of a dispatch command id `<uuid>:<action>:<n>`; None for another shape."""
    parts = command_id.rsplit(":", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    try:
        uuid.UUID(parts[0])
    except ValueError:
        return None
    return parts[1]


def command_request(command_id: str) -> uuid.UUID | None:
    """The uuid a dispatch command id starts with (the request's, or the follow-up's)."""
    if command_action(command_id) is None:
        return None
    return uuid.UUID(command_id.rsplit(":", 2)[0])


# --- what the portal says -------------------------------------------------------------------


@dataclass(frozen=True)
class LeadStatuses:
    """The lead statuses' meaning, from `crm.status.list` (`ENTITY_ID` `STATUS`)."""

    initial: str | None
    """The first in-progress status by sort: a lead nobody touched."""
    closed: Mapping[str, Outcome]
    """Final statuses: success or failure."""


LEAD_STATUS_READ: dict[str, Any] = {"filter": {"ENTITY_ID": "STATUS"}, "order": {"SORT": "ASC"}}


def _semantics(row: Mapping[str, Any]) -> str:
    """`S`, `F` or `P` from a status row (`SEMANTICS`, else `EXTRA.SEMANTICS` in words)."""
    short = str(row.get("SEMANTICS") or "").upper()
    if short in ("S", "F"):
        return short
    extra = row.get("EXTRA")
    words = str(extra.get("SEMANTICS") or "") if isinstance(extra, Mapping) else ""
    return {"success": "S", "failure": "F"}.get(words.lower(), "P")


def _sort(row: Mapping[str, Any]) -> int:
    try:
        return int(row.get("SORT") or 0)
    except (TypeError, ValueError):
        return 0


def lead_statuses(rows: Any) -> LeadStatuses:
    """The meaning of each lead status in `crm.status.list` rows (rows of other entities are
    left out)."""
    statuses = [
        row
        for row in (rows if isinstance(rows, list) else [])
        if isinstance(row, Mapping) and row.get("ENTITY_ID") == "STATUS" and row.get("STATUS_ID")
    ]
    statuses.sort(key=_sort)
    closed: dict[str, Outcome] = {}
    initial: str | None = None
    for row in statuses:
        semantics = _semantics(row)
        status = str(row["STATUS_ID"])
        if semantics == "S":
            closed[status] = "success"
        elif semantics == "F":
            closed[status] = "failure"
        elif initial is None:
            initial = status
    return LeadStatuses(initial=initial, closed=closed)


@dataclass(frozen=True)
class Seen:
    """One read of a lead or task: its state, the portal's status, its responsible and when the
    portal says it last changed (closed, for a closed task)."""

    state: EntityState
    outcome: Outcome | None
    status: str
    responsible_id: int | None
    changed_at: datetime | None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def portal_time(value: Any) -> datetime | None:
    """A portal date (`2026-03-14T10:30:00+03:00`) as an aware datetime; None when absent or
    without a zone."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def lead_seen(row: Mapping[str, Any], statuses: LeadStatuses) -> Seen:
    status = str(row.get("STATUS_ID") or "")
    outcome = statuses.closed.get(status)
    state: EntityState
    if outcome is not None:
        state = "closed"
    elif status in ("", statuses.initial):
        state = "open"
    else:
        state = "in_work"
    return Seen(
        state=state,
        outcome=outcome,
        status=status,
        responsible_id=_int(row.get("ASSIGNED_BY_ID")),
        changed_at=portal_time(row.get("DATE_MODIFY")),
    )


def _field(row: Mapping[str, Any], camel: str, upper: str) -> Any:
    return row.get(camel, row.get(upper))


def task_seen(row: Mapping[str, Any]) -> Seen:
    code = _int(_field(row, "status", "STATUS"))
    state: EntityState = "open"
    outcome: Outcome | None = None
    if code in TASK_DONE:
        state, outcome = "closed", "success"
    elif code in TASK_DECLINED:
        state, outcome = "closed", "failure"
    elif code in TASK_IN_WORK:
        state = "in_work"
    closed = portal_time(_field(row, "closedDate", "CLOSED_DATE"))
    changed = portal_time(_field(row, "changedDate", "CHANGED_DATE"))
    return Seen(
        state=state,
        outcome=outcome,
        status="" if code is None else str(code),
        responsible_id=_int(_field(row, "responsibleId", "RESPONSIBLE_ID")),
        changed_at=(closed or changed) if state == "closed" else changed,
    )


class Read(NamedTuple):
    """One portal call of a round of reads: its name in the batch, the method, its params."""

    name: str
    method: str
    params: dict[str, Any]


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    unique = sorted(set(ids))
    return [unique[i : i + IDS_PER_READ] for i in range(0, len(unique), IDS_PER_READ)]


def state_reads(leads: Sequence[int], tasks: Sequence[int]) -> list[Read]:
    """The list calls that read `leads` and `tasks` (50 ids per call, by an id filter)."""
    reads = [
        Read(
            f"leads{n}",
            "crm.lead.list",
            {"filter": {"@ID": chunk}, "select": list(LEAD_SELECT), "start": -1},
        )
        for n, chunk in enumerate(_chunks(leads))
    ]
    reads.extend(
        Read(
            f"tasks{n}",
            "tasks.task.list",
            {"filter": {"ID": chunk}, "select": list(TASK_SELECT), "start": -1},
        )
        for n, chunk in enumerate(_chunks(tasks))
    )
    return reads


def read_ids(read: Read) -> list[int]:
    """The ids a read asked for."""
    wanted = read.params["filter"].get("@ID", read.params["filter"].get("ID"))
    return [int(i) for i in wanted]


def rows_by_id(read: Read, result: Any) -> dict[int, Mapping[str, Any]]:
    """The rows a read returned, by id (`crm.lead.list`: a list; `tasks.task.list`:
    `{"tasks": [...]}` with camelCase keys)."""
    rows = result.get("tasks") if isinstance(result, Mapping) else result
    found: dict[int, Mapping[str, Any]] = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping) and (entity := _int(_field(row, "id", "ID"))) is not None:
            found[entity] = row
    return found


# --- what changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Followed:
    """What the decisions need of a follow-up row."""

    action: str
    entity_type: str
    state: EntityState
    created_at: datetime
    first_change_at: datetime | None = None
    closed_at: datetime | None = None
    last_read_at: datetime | None = None
    responsible_id: int | None = None
    status: str | None = None
    due_at: datetime | None = None
    sla_hours: float | None = None
    sla_working_hours: bool | None = None
    """The SLA as it applied when the follow-up began (a later change of the YAML leaves it)."""
    sla_until: SlaUntil | None = None
    escalation: Escalation | None = None


@dataclass(frozen=True)
class Change:
    """A follow-up after one read."""

    state: EntityState
    outcome: Outcome | None
    status: str | None
    responsible_id: int | None
    first_change_at: datetime | None
    closed_at: datetime | None


def _when(seen: Seen | None, followed: Followed, now: datetime) -> datetime:
    """When the change seen at `now` happened: the portal's time when it falls between the last
    read (which did not see it) and now, else now."""
    after = followed.last_read_at or followed.created_at
    at = seen.changed_at if seen is not None else None
    if at is None or at > now or at < after:
        return now
    return at


def observe(followed: Followed, seen: Seen | None, now: datetime) -> Change:
    """The follow-up after a read at `now` (`seen` None: the read no longer returns it)."""
    if seen is None:
        return Change(
            state="closed",
            outcome="deleted",
            status=followed.status,
            responsible_id=followed.responsible_id,
            first_change_at=followed.first_change_at or now,
            closed_at=followed.closed_at or now,
        )
    at = _when(seen, followed, now)
    first = followed.first_change_at
    if first is None and seen.state != "open":
        first = at
    closed = followed.closed_at
    if closed is None and seen.state == "closed":
        closed = at
    return Change(
        state=seen.state,
        outcome=seen.outcome,
        status=seen.status,
        responsible_id=seen.responsible_id or followed.responsible_id,
        first_change_at=first,
        closed_at=closed,
    )


def satisfied(state: EntityState, until: SlaUntil | None) -> bool:
    """Whether the SLA asks nothing more of an entity in `state`."""
    if until == "closed":
        return state == "closed"
    return state != "open"


def next_read(
    followed: Followed, state: EntityState, now: datetime, followup: Followup
) -> datetime | None:
    """When to read the entity again: after a sixth of its age, within the configured bounds,
    and right at its SLA deadline if that comes first; None when it is closed or has been
    followed `stop_after_days`."""
    if state == "closed":
        return None
    if now - followed.created_at >= timedelta(days=followup.stop_after_days):
        return None
    interval = (now - followed.created_at) / AGE_DIVISOR
    interval = max(interval, timedelta(minutes=followup.read_every_minutes))
    interval = min(interval, timedelta(minutes=followup.read_max_minutes))
    later = now + interval
    due = followed.due_at
    if (
        due is not None
        and followed.escalation is None
        and not satisfied(state, followed.sla_until)
        and now < due < later
    ):
        return due
    return later


# --- the SLA --------------------------------------------------------------------------------


def _day_bounds(day: date, hours: WorkingHours, tz: ZoneInfo) -> tuple[datetime, datetime]:
    return datetime.combine(day, hours.start, tz), datetime.combine(day, hours.end, tz)


def add_working_hours(
    start: datetime, hours: float, working: WorkingHours, tz: ZoneInfo
) -> datetime:
    """`start` plus `hours` counted only inside the working hours (portal time zone)."""
    remaining = timedelta(hours=hours)
    cursor = start.astimezone(tz)
    day = cursor.date()
    for _ in range(366 * 8):  # bounded: every week has a working day (WorkingHours checks)
        if WEEKDAYS[day.weekday()] in working.weekdays:
            opens, closes = _day_bounds(day, working, tz)
            cursor = max(cursor, opens)
            if cursor < closes:
                available = closes - cursor
                if remaining <= available:
                    return (cursor + remaining).astimezone(start.tzinfo)
                remaining -= available
        day += timedelta(days=1)
        cursor = datetime.combine(day, working.start, tz)
    raise ValueError("the working hours never open")


def sla_due(created_at: datetime, sla: Sla, working: WorkingHours, tz: ZoneInfo) -> datetime:
    """The SLA's deadline of an entity created at `created_at`."""
    if sla.working_hours:
        return add_working_hours(created_at, sla.sla_hours, working, tz)
    return created_at + timedelta(hours=sla.sla_hours)


def overdue(followed: Followed, now: datetime) -> bool:
    """Past its SLA's deadline and the SLA not met."""
    return (
        followed.due_at is not None
        and now >= followed.due_at
        and followed.closed_at is None
        and not satisfied(followed.state, followed.sla_until)
    )


def escalation_due(followed: Followed, now: datetime) -> bool:
    """Whether the follow-up's one escalation is due now: overdue, never escalated, and read
    since its deadline (so a lead handled just before it is not escalated on an old read). An
    escalation task is never escalated itself."""
    return (
        followed.action != ESCALATION
        and followed.escalation is None
        and overdue(followed, now)
        and followed.due_at is not None
        and followed.last_read_at is not None
        and followed.last_read_at >= followed.due_at
    )


def escalation_target(action: str, followup: Followup, head_of_service: int | None) -> int | None:
    """Who gets the escalation: the action's `escalate_to`, else the section's, else the head
    of service (`routing.service.responsible_id`)."""
    sla = followup.sla(action)
    if sla is not None and sla.escalate_to is not None:
        return sla.escalate_to
    return followup.escalate_to or head_of_service


WHAT = {
    "service": "Service lead",
    "marketing": "Marketing lead",
    "task": "Task for a detractor",
    "call_task": "Call task for an unanswered survey",
    ESCALATION: "Escalation task",
}


def escalation_text(followed: Followed, entity_id: int, tz: ZoneInfo) -> tuple[str, str]:
    """The escalation task's title and description (no personal data: ids and times only), with
    the SLA the follow-up began with."""
    what = WHAT.get(followed.action, followed.action)
    kind = "lead" if followed.entity_type == "lead" else "task"
    hours = (
        ""
        if followed.sla_hours is None
        else f"{followed.sla_hours:g}{' working' if followed.sla_working_hours else ''} h"
    )
    needed = "closed" if followed.sla_until == "closed" else "taken in work"
    title = f"Overdue: {what.lower()} #{entity_id} not {needed} within {hours}".rstrip()
    created = followed.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    due = (
        "" if followed.due_at is None else followed.due_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    )
    responsible = (
        f"user #{followed.responsible_id}" if followed.responsible_id is not None else "nobody"
    )
    state = {"open": "untouched", "in_work": "in work", "closed": "closed"}[followed.state]
    description = (
        f"{what} ({kind} #{entity_id}) created by b24-nps on {created} was to be {needed} by"
        f" {due}. It is still {state} (status {followed.status or 'unknown'}), assigned to"
        f" {responsible}. Please see that it is handled."
    )
    return title, description
