"""View models of the dashboard's "Follow-up" page (docs/dashboard.md, Did anyone act): of the
leads and tasks b24-nps created (dispatch follows them in the portal until someone acts), the
loop closed % and the median time to the first change and to the close over the selection, per
action and per manager, with the change against the previous period; the open overdue ones
(linked to the portal, their escalation) and the rows of their CSV export; the overview's tile.

Pure: the dictionaries `services.dispatch.read` answers (`loop_closed`, `loop_closed_total`,
`overdue`) in, what the page shows out. Times are shown in the portal's time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from services.reports.asked import fmt_rate, task_url
from services.reports.views import DASH, contact_url, fmt_time, manager_label, safe_cell
from shared.dispatch_config import ESCALATION_ACTION, FOLLOWED_ACTIONS, FOLLOWUP_ACTIONS, Followup

ESCALATION = ESCALATION_ACTION
ACTIONS: dict[str, str] = {
    "service": "service lead",
    "marketing": "marketing lead",
    "task": "head of sales' task",
    "call_task": "call task",
    ESCALATION: "escalation task",
}
"""What each action creates, as the page names it."""
STATES: dict[str, str] = {"open": "open", "in_work": "in work", "closed": "closed"}


def action_label(action: str) -> str:
    return ACTIONS.get(action, action)


def fmt_hours(hours: float | None) -> str:
    """A duration given in hours as people read it: `40 min`, `5.5 h`, `3.2 d` (from 48 h on),
    DASH for none."""
    if hours is None:
        return DASH
    minutes = round(hours * 60)
    if minutes < 60:
        return f"{minutes} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def fmt_hours_change(now: float | None, then: float | None) -> str:
    """How much longer (`+1.5 h`) or shorter (`-40 min`) `now` is than `then`; DASH when either
    is missing."""
    if now is None or then is None:
        return DASH
    delta = round(now - then, 2)
    return ("-" if delta < 0 else "+") + fmt_hours(abs(delta))


@dataclass(frozen=True)
class Loop:
    """Of the leads and tasks followed: how many are open, in work and closed, the median hours
    to the first change and to the close (of those that changed, closed), how many are open and
    overdue now, and how many were escalated."""

    followed: int = 0
    open: int = 0
    in_work: int = 0
    closed: int = 0
    overdue: int = 0
    escalated: int = 0
    hours_to_change: float | None = None
    hours_to_close: float | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Loop:
        """The figures of a `loop_closed` (or `loop_closed_total`) row."""
        return cls(
            followed=row["followed"],
            open=row["open"],
            in_work=row["in_work"],
            closed=row["closed"],
            overdue=row["overdue"],
            escalated=row["escalated"],
            hours_to_change=row["median_hours_to_change"],
            hours_to_close=row["median_hours_to_close"],
        )

    @property
    def closed_pct(self) -> str:
        """The loop closed %: closed of followed."""
        return fmt_rate(self.closed, self.followed)

    @property
    def to_change(self) -> str:
        return fmt_hours(self.hours_to_change)

    @property
    def to_close(self) -> str:
        return fmt_hours(self.hours_to_close)

    @property
    def bar(self) -> LoopBar | None:
        """The followed as one bar: closed from 0, in work after them, open the rest."""
        if self.followed == 0:
            return None
        closed = round(100 * self.closed / self.followed, 3)
        in_work = round(100 * self.in_work / self.followed, 3)
        return LoopBar(closed=closed, in_work=in_work, in_work_start=closed)


@dataclass(frozen=True)
class LoopBar:
    """Widths in percent of the followed: the closed from 0, the in work after them."""

    closed: float
    in_work: float
    in_work_start: float


def sla_text(action: str, followup: Followup) -> str:
    """The SLA the portal YAML gives `action` (`4 working h to act`; an escalation task: its
    deadline, to close), or `no SLA`."""
    sla = followup.sla(action)
    if sla is None:
        return "no SLA"
    return _sla_words(sla.sla_hours, sla.working_hours, sla.until)


def _sla_words(hours: float, working: bool | None, until: str | None) -> str:
    """`4 working h to act`, `24 h to close`; `working` None (a row followed before the flag was
    kept with it, migration 0615): `4 h (working or calendar: unknown) to act`."""
    kind = {True: " working h", False: " h", None: " h (working or calendar: unknown)"}[working]
    return f"{hours:g}{kind} to {'close' if until == 'closed' else 'act'}"


def row_sla_text(record: Mapping[str, Any]) -> str:
    """The SLA a followed lead or task began with (kept with it: a later change of the YAML
    does not rewrite it), e.g. `4 working h to act`; `no SLA`. Whether the hours of a row
    followed before 0615 were working hours is unknown, and said so."""
    if record["sla_hours"] is None:
        return "no SLA"
    return _sla_words(record["sla_hours"], record["sla_working_hours"], record["sla_until"])


@dataclass(frozen=True)
class LoopLine:
    """A row of a loop-closed table (`key` for the page's `data-row`)."""

    key: str
    label: str
    loop: Loop
    value: str | None = None
    """The filter value that narrows the page to this row (an action, a manager id)."""
    sla: str = ""


def _action_order(action: str) -> tuple[int, str]:
    order = FOLLOWUP_ACTIONS
    return (order.index(action), "") if action in order else (len(order), action)


@dataclass(frozen=True)
class Escalations:
    """How the escalations of the selection stand: queued for crm_sync, the task created, the
    portal refused it, or not made (escalation off, nobody to escalate to)."""

    queued: int = 0
    created: int = 0
    failed: int = 0
    skipped: int = 0
    unfollowed: int = 0
    """Of those created, the tasks made before escalation tasks were followed: no row of
    their own in the per-action table."""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Escalations:
        """The escalation counts of a `loop_closed_total` row."""
        return cls(
            queued=row["escalation_queued"],
            created=row["escalation_created"],
            failed=row["escalation_failed"],
            skipped=row["escalation_skipped"],
            unfollowed=row["escalation_unfollowed"],
        )

    @property
    def text(self) -> str:
        """`2 tasks created (1 made before they were followed: not in the table), 1 queued for
        crm_sync, 1 refused by the portal, 1 not made`."""
        created = f"{self.created} task{'' if self.created == 1 else 's'} created"
        if self.unfollowed:
            created += f" ({self.unfollowed} made before they were followed: not in the table)"
        parts = [
            (self.created, created),
            (self.queued, f"{self.queued} queued for crm_sync"),
            (self.failed, f"{self.failed} refused by the portal"),
            (self.skipped, f"{self.skipped} not made (escalation off or nobody to escalate to)"),
        ]
        return ", ".join(text for n, text in parts if n)


def by_action(rows: Iterable[Mapping[str, Any]], followup: Followup) -> list[LoopLine]:
    """The loop per action (`loop_closed` rows by action) in the order service, marketing, task,
    call task, escalation task, with the action's SLA."""
    return [
        LoopLine(
            key=f"action-{row['key']}",
            label=action_label(row["key"]),
            loop=Loop.of(row),
            value=row["key"] if row["key"] in FOLLOWUP_ACTIONS else None,
            sla=sla_text(row["key"], followup),
        )
        for row in sorted(rows, key=lambda row: _action_order(row["key"]))
    ]


def by_manager(
    rows: Iterable[Mapping[str, Any]], names: Mapping[int, str] | None = None
) -> list[LoopLine]:
    """The loop per manager (`loop_closed` rows by manager), by name where `names` has it, most
    followed first; the leads and tasks without a manager last."""
    loops = {row["key"]: Loop.of(row) for row in rows}
    order = sorted(loops, key=lambda who: (who is None, -loops[who].followed, who or 0))
    return [
        LoopLine(
            key=f"manager-{'none' if who is None else who}",
            label=manager_label(who, names),
            loop=loops[who],
            value=None if who is None else str(who),
        )
        for who in order
    ]


def _points(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100 * part / whole


@dataclass(frozen=True)
class LoopChange:
    """The loop over the selection against the previous period of the same length."""

    since: str
    """The previous period, `first … last` day."""
    days: int
    followed: str
    """The change of the followed (`+3`)."""
    previous_followed: int
    closed_pct: str
    """The loop closed %'s change in percentage points (`+12.5`), DASH when either has none."""
    previous_closed_pct: str
    to_close: str
    """The median time to close's change (`-1.5 h`), DASH when either has none."""
    previous_to_close: str
    direction: str
    """`up`, `down` or `same` for the loop closed % (empty when there is no change to tell)."""
    close_direction: str
    """`up` (faster: good) or `down` (slower) for the median time to close, else empty."""


def loop_change(now: Loop, then: Loop, first: date, last: date) -> LoopChange:
    """How `now` differs from `then`, the loop of the leads and tasks created `first`..`last`."""
    pct_now, pct_then = _points(now.closed, now.followed), _points(then.closed, then.followed)
    delta = None if pct_now is None or pct_then is None else round(pct_now - pct_then, 1)
    direction = "" if delta is None else "up" if delta > 0 else "down" if delta < 0 else "same"
    faster = ""
    if now.hours_to_close is not None and then.hours_to_close is not None:
        if now.hours_to_close < then.hours_to_close:
            faster = "up"
        elif now.hours_to_close > then.hours_to_close:
            faster = "down"
    return LoopChange(
        since=f"{first.isoformat()} … {last.isoformat()}",
        days=(last - first).days + 1,
        followed=f"{now.followed - then.followed:+d}",
        previous_followed=then.followed,
        closed_pct=DASH if delta is None else f"{delta:+.1f}",
        previous_closed_pct=then.closed_pct,
        to_close=fmt_hours_change(now.hours_to_close, then.hours_to_close),
        previous_to_close=then.to_close,
        direction=direction,
        close_direction=faster,
    )


def lead_url(origin: str | None, lead_id: int | None) -> str | None:
    """The Bitrix24 page of a lead."""
    if origin is None or lead_id is None:
        return None
    return f"{origin}/crm/lead/details/{lead_id}/"


def entity_url(origin: str | None, record: Mapping[str, Any]) -> str | None:
    """The portal page of a followed lead, or of a task (opened from its responsible's page)."""
    if record["entity_type"] == "lead":
        return lead_url(origin, record["entity_id"])
    return task_url(origin, record["responsible_id"], record["entity_id"])


@dataclass(frozen=True)
class Escalation:
    text: str
    task_id: int | None = None
    task_url: str | None = None


def escalation(
    record: Mapping[str, Any], origin: str | None, names: Mapping[int, str] | None = None
) -> Escalation:
    """Whether an overdue follow-up was escalated, to whom, and its escalation task (an
    escalation task itself is never escalated)."""
    if record["action"] == ESCALATION:
        return Escalation("none: it is the escalation")
    state = record["escalation"]
    to = record["escalated_to"]
    whom = "" if to is None else f" for {manager_label(to, names)}"
    if state == "created":
        task = record["escalation_task_id"]
        return Escalation(f"task created{whom}", task, task_url(origin, to, task))
    if state == "queued":
        return Escalation(f"queued{whom} (crm_sync is creating the task)")
    if state == "failed":
        return Escalation(f"failed ({record['escalation_reason'] or 'the portal refused it'})")
    if state == "skipped":
        return Escalation(f"not escalated ({record['escalation_reason'] or 'skipped'})")
    return Escalation("not yet (at its next read)")


def needed(record: Mapping[str, Any]) -> str:
    """What the SLA asks by the deadline: `acted on` (in work or closed) or `closed`."""
    return "closed" if record["sla_until"] == "closed" else "acted on"


def state_text(record: Mapping[str, Any]) -> str:
    """`open`, `in work`, `closed`, with the portal's status as read (`in work (IN_PROCESS)`)."""
    state = STATES.get(record["state"], record["state"])
    return f"{state} ({record['status']})" if record["status"] else state


@dataclass(frozen=True)
class OverdueLine:
    """An open overdue lead or task (and a row of the CSV export)."""

    follow_id: str
    action: str
    entity: str
    """`lead 4242` or `task 77`."""
    entity_id: int
    entity_url: str | None
    state: str
    responsible: str
    manager: str
    contact_id: int | None
    contact_url: str | None
    created: str
    deadline: str
    needed: str
    """What the SLA asked by the deadline: `acted on` or `closed`."""
    sla: str
    """The SLA it began with (`4 working h to act`)."""
    hours_late: float
    late: str
    escalation: str
    escalation_task_id: int | None
    escalation_url: str | None


def overdue_lines(
    records: Sequence[Mapping[str, Any]],
    origin: str | None,
    *,
    zone: tzinfo = UTC,
    names: Mapping[int, str] | None = None,
) -> list[OverdueLine]:
    """Lines of `overdue` rows: leads, tasks, contacts and escalation tasks linked to the portal
    at `origin`, times in `zone`, people named by `names`."""
    lines = []
    for r in records:
        escalated = escalation(r, origin, names)
        due: datetime = r["due_at"]
        lines.append(
            OverdueLine(
                follow_id=str(r["follow_id"]),
                action=action_label(r["action"]),
                entity=f"{r['entity_type']} {r['entity_id']}",
                entity_id=r["entity_id"],
                entity_url=entity_url(origin, r),
                state=state_text(r),
                responsible=(
                    "nobody"
                    if r["responsible_id"] is None
                    else manager_label(r["responsible_id"], names)
                ),
                manager=manager_label(r["manager_id"], names),
                contact_id=r["contact_id"],
                contact_url=contact_url(origin, r["contact_id"]),
                created=fmt_time(r["created_at"], zone),
                deadline=fmt_time(due, zone),
                needed=needed(r),
                sla=row_sla_text(r),
                hours_late=r["hours_overdue"],
                late=fmt_hours(r["hours_overdue"]),
                escalation=escalated.text,
                escalation_task_id=escalated.task_id,
                escalation_url=escalated.task_url,
            )
        )
    return lines


FOLLOWUP_CSV_HEADER: tuple[str, ...] = (
    "action",
    "entity",
    "entity link",
    "state",
    "responsible",
    "manager",
    "contact",
    "contact link",
    "created",
    "SLA",
    "SLA deadline",
    "needed by then",
    "hours overdue",
    "escalation",
    "escalation task id",
    "escalation task link",
)


def followup_csv_row(line: OverdueLine) -> list[str]:
    """`line`'s cells in the order of `FOLLOWUP_CSV_HEADER`, each safe to open in a spreadsheet
    (an empty cell where the page shows a dash)."""
    cells = [
        line.action,
        line.entity,
        line.entity_url or "",
        line.state,
        line.responsible,
        line.manager,
        "" if line.contact_id is None else str(line.contact_id),
        line.contact_url or "",
        line.created,
        line.sla,
        line.deadline,
        line.needed,
        f"{line.hours_late:.1f}",
        line.escalation,
        "" if line.escalation_task_id is None else str(line.escalation_task_id),
        line.escalation_url or "",
    ]
    return [safe_cell("" if cell == DASH else cell) for cell in cells]


@dataclass(frozen=True)
class FollowupView:
    """Everything the "Follow-up" page shows."""

    loop: Loop
    change: LoopChange | None
    actions: tuple[LoopLine, ...]
    managers: tuple[LoopLine, ...]
    escalations: Escalations
    overdue: tuple[OverdueLine, ...]
    overdue_total: int
    followed_in_all: int
    """The leads and tasks followed on the portal, whatever the filters: 0 means dispatch never
    followed any (the page says how to start)."""
    enabled: bool = True
    """`dispatch.followup.enabled` of the portal YAML."""
    slas: bool = True
    """Whether any action has an SLA (without one nothing is ever overdue)."""


def has_sla(followup: Followup) -> bool:
    return any(followup.sla(action) is not None for action in FOLLOWED_ACTIONS)


@dataclass(frozen=True)
class FollowupTile:
    """The overview's tile: how many followed leads and tasks are open and overdue, linking to
    the follow-up page."""

    overdue: int
    href: str

    @property
    def label(self) -> str:
        return f"overdue follow-up{'' if self.overdue == 1 else 's'}"
