"""View models of the dashboard's "Asked" page (docs/dashboard.md, Asked and not answered): the
response funnel of the surveys dispatch sent (sent → opened → answered) over the selection, per
survey, per responsible manager and per period, with the change against the previous period;
the requests awaiting an answer (with their next reminder) and those that ended unanswered
(with their call task); the rows of the page's CSV export; and when the survey behind an answer
of the all-ratings list was sent.

Pure: register rows (the dictionaries `services.dispatch.read` answers) in, what the page shows
out. Times are shown in the portal's time zone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Protocol

from services.reports.views import (
    DASH,
    contact_url,
    fmt_time,
    manager_label,
    safe_cell,
)
from shared.dispatch_config import Dispatch
from shared.events import DEAL_ENTITY_TYPE_ID

Bucket = Callable[[date], tuple[date, str]]
"""The period a day falls in: its first day (for the order) and its label (`2024-05`)."""


def fmt_rate(part: int, whole: int) -> str:
    """`part` of `whole` in percent with one decimal (`42.9 %`), or DASH when `whole` is 0."""
    return DASH if whole == 0 else f"{100 * part / whole:.1f} %"


@dataclass(frozen=True)
class Funnel:
    """Of the requests sent (their first message went out): how many were opened, answered,
    still await an answer, and ended unanswered."""

    sent: int = 0
    opened: int = 0
    answered: int = 0
    awaiting: int = 0
    unanswered: int = 0

    def __add__(self, other: Funnel) -> Funnel:
        return Funnel(
            self.sent + other.sent,
            self.opened + other.opened,
            self.answered + other.answered,
            self.awaiting + other.awaiting,
            self.unanswered + other.unanswered,
        )

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Funnel:
        return cls(
            sent=row["sent"],
            opened=row["opened"],
            answered=row["answered"],
            awaiting=row["awaiting"],
            unanswered=row["unanswered"],
        )

    @property
    def open_rate(self) -> str:
        return fmt_rate(self.opened, self.sent)

    @property
    def answer_rate(self) -> str:
        return fmt_rate(self.answered, self.sent)

    @property
    def bar(self) -> FunnelBar | None:
        """The funnel as one bar over the sent: answered, opened (not answered), the rest."""
        if self.sent == 0:
            return None
        answered = round(100 * self.answered / self.sent, 3)
        opened = round(100 * max(self.opened - self.answered, 0) / self.sent, 3)
        return FunnelBar(answered=answered, opened=opened, opened_start=answered)


@dataclass(frozen=True)
class FunnelBar:
    """Widths in percent of the sent: the answered from 0, the opened (not answered) after."""

    answered: float
    opened: float
    opened_start: float


def total(rows: Iterable[Mapping[str, Any]]) -> Funnel:
    """The funnel of every row (`funnel` rows of dispatch's read module)."""
    whole = Funnel()
    for row in rows:
        whole += Funnel.of(row)
    return whole


@dataclass(frozen=True)
class FunnelLine:
    """One row of a response-rate table: what it counts (`key` for the page's `data-row`)."""

    key: str
    label: str
    funnel: Funnel
    value: str | None = None
    """The filter value that narrows the page to this row (a survey name, a manager id)."""


def by_survey(rows: Iterable[Mapping[str, Any]]) -> list[FunnelLine]:
    """The funnel per survey, by name."""
    funnels: dict[str, Funnel] = {}
    for row in rows:
        funnels[row["survey"]] = funnels.get(row["survey"], Funnel()) + Funnel.of(row)
    return [
        FunnelLine(key=f"survey-{name}", label=name, funnel=funnels[name], value=name)
        for name in sorted(funnels, key=str.casefold)
    ]


def by_manager(
    rows: Iterable[Mapping[str, Any]], names: Mapping[int, str] | None = None
) -> list[FunnelLine]:
    """The funnel per responsible manager (by name where `names` has it), most sent first;
    requests without a responsible last."""
    funnels: dict[int | None, Funnel] = {}
    for row in rows:
        who = row["responsible_id"]
        funnels[who] = funnels.get(who, Funnel()) + Funnel.of(row)
    order = sorted(funnels, key=lambda who: (who is None, -funnels[who].sent, who or 0))
    return [
        FunnelLine(
            key=f"manager-{'none' if who is None else who}",
            label=manager_label(who, names),
            funnel=funnels[who],
            value=None if who is None else str(who),
        )
        for who in order
    ]


def by_period(rows: Iterable[Mapping[str, Any]], bucket: Bucket) -> list[FunnelLine]:
    """The funnel per period (`bucket` of the day the first message went out), in order."""
    funnels: dict[tuple[date, str], Funnel] = {}
    for row in rows:
        key = bucket(row["day"])
        funnels[key] = funnels.get(key, Funnel()) + Funnel.of(row)
    return [
        FunnelLine(key=f"period-{name}", label=name, funnel=funnels[(start, name)])
        for start, name in sorted(funnels)
    ]


def _points(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100 * part / whole


def _point_change(now: float | None, then: float | None) -> str:
    if now is None or then is None:
        return DASH
    return f"{round(now - then, 1):+.1f}"


@dataclass(frozen=True)
class AskedChange:
    """The funnel against the previous period of the same length."""

    since: str
    """The previous period, `first … last` day."""
    days: int
    sent: str
    """The change of the requests sent (`+5`)."""
    previous_sent: int
    answer_rate: str
    """The answer rate's change in percentage points (`+3.2`), DASH when either has none."""
    previous_answer_rate: str
    open_rate: str
    previous_open_rate: str
    direction: str
    """`up`, `down` or `same` for the answer rate (empty when there is no change to tell)."""


def asked_change(now: Funnel, then: Funnel, first: date, last: date) -> AskedChange:
    """How `now` differs from `then`, the funnel of `first`..`last`."""
    answered_now, answered_then = (
        _points(now.answered, now.sent),
        _points(then.answered, then.sent),
    )
    delta = None
    if answered_now is not None and answered_then is not None:
        delta = round(answered_now - answered_then, 1)
    direction = "" if delta is None else "up" if delta > 0 else "down" if delta < 0 else "same"
    return AskedChange(
        since=f"{first.isoformat()} … {last.isoformat()}",
        days=(last - first).days + 1,
        sent=f"{now.sent - then.sent:+d}",
        previous_sent=then.sent,
        answer_rate=_point_change(answered_now, answered_then),
        previous_answer_rate=then.answer_rate,
        open_rate=_point_change(_points(now.opened, now.sent), _points(then.opened, then.sent)),
        previous_open_rate=then.open_rate,
        direction=direction,
    )


def deal_url(origin: str | None, deal_id: int | None) -> str | None:
    """The Bitrix24 page of a deal."""
    if origin is None or deal_id is None:
        return None
    return f"{origin}/crm/deal/details/{deal_id}/"


def task_url(origin: str | None, user_id: int | None, task_id: int | None) -> str | None:
    """The Bitrix24 page of a task, opened from the page of a user who takes part in it."""
    if origin is None or user_id is None or task_id is None:
        return None
    return f"{origin}/company/personal/user/{user_id}/tasks/task/view/{task_id}/"


def _deal(record: Mapping[str, Any]) -> tuple[str, int | None]:
    """The deal a request belongs to: its NPS deal (a deal survey), else the sale's deal."""
    if record["nps_deal_id"] is not None:
        return f"NPS deal {record['nps_deal_id']}", record["nps_deal_id"]
    if record["sale_deal_id"] is not None:
        return f"sale {record['sale_deal_id']}", record["sale_deal_id"]
    return DASH, None


def reminders(record: Mapping[str, Any]) -> int:
    """The reminders sent: every message after the first."""
    sends: int = record["sends"]
    return max(sends - 1, 0)


def next_reminder(record: Mapping[str, Any], dispatch: Dispatch, zone: tzinfo = UTC) -> str:
    """When a request awaiting an answer gets its next reminder (the configured delay after the
    last message, or later when the timer has already put it off, e.g. to the send window's
    opening), or when it ends unanswered once no reminder is left."""
    sends: int = record["sends"]
    last: datetime | None = record["last_sent_at"]
    due: datetime | None = record["due_at"]
    if last is None or sends < 1:
        return DASH
    delays = dispatch.reminders.after_days
    if sends <= len(delays):
        at = last + timedelta(days=delays[sends - 1])
        return fmt_time(max(at, due) if due is not None else at, zone)
    at = last + timedelta(days=dispatch.unanswered.after_days)
    at = max(at, due) if due is not None else at
    return f"none left: unanswered from {fmt_time(at, zone)}"


@dataclass(frozen=True)
class AskedLine:
    """A request of the "Asked" page's lists (and a row of its CSV export)."""

    request_id: str
    survey: str
    product: str
    contact_id: int
    contact_url: str | None
    manager: str
    deal: str
    deal_url: str | None
    channel: str
    status: str
    sent: str
    reminders: int
    opened: str
    answered: str
    next_reminder: str
    closed: str
    call_task: str
    """`created`, `not created (why)`, or empty where no call task is due."""
    task_id: int | None
    task_url: str | None


def request_status(record: Mapping[str, Any]) -> str:
    """Where a sent request stands, in words."""
    state: str = record["state"]
    if record["answered_at"] is not None:
        return "answered"
    if record["reason"] == "opted_out":
        return "opted out"
    if record["closed_at"] is None and state in ("sent", "reminded", "opened"):
        return "awaiting answer"
    if state == "failed":
        return f"failed ({record['reason']})" if record["reason"] else "failed"
    return state


@dataclass(frozen=True)
class DealSurveyLine:
    """A survey request of one deal (the deal card's tab): what it asked, how it stands."""

    request_id: str
    survey: str
    role: str
    """`asked for this deal` (a sale's or a robot's), or `this deal is its NPS deal`."""
    channel: str
    status: str
    created: str
    sent: str
    opened: str
    answered: str


def deal_survey_lines(
    records: Iterable[Mapping[str, Any]], deal_id: int, zone: tzinfo = UTC
) -> tuple[DealSurveyLine, ...]:
    """Lines of a deal's requests (dispatch's `deal_requests` rows), times in `zone`."""

    def at(value: datetime | None) -> str:
        return DASH if value is None else fmt_time(value, zone)

    return tuple(
        DealSurveyLine(
            request_id=str(r["request_id"]),
            survey=r["survey"],
            role="asked for this deal"
            if r["sale_deal_id"] == deal_id
            else "this deal is its NPS deal",
            channel=r["channel"],
            status=request_status(r),
            created=fmt_time(r["created_at"], zone),
            sent=at(r["sent_at"]),
            opened=at(r["opened_at"]),
            answered=at(r["answered_at"]),
        )
        for r in records
    )


class CommandOutcome(Protocol):
    """What crm_sync's read module says of a call task command."""

    @property
    def state(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def entity_id(self) -> int | None: ...
    @property
    def reason(self) -> str | None: ...


def call_task_command(request_id: uuid.UUID | str) -> str:
    """The command id of a request's call task (dispatch's `dispatch.call_task`)."""
    return f"{request_id}:call_task:0"


@dataclass(frozen=True)
class CallTaskState:
    text: str
    task_id: int | None = None
    responsible_id: int | None = None


def call_task_state(
    record: Mapping[str, Any], outcome: CommandOutcome | None, dispatch: Dispatch
) -> CallTaskState:
    """Whether an unanswered request's call task was created (its id), or why not. The task's
    own state in the portal (open, done) is not followed."""
    responsible = record["responsible_id"] or dispatch.unanswered.responsible_id
    if record["call_task_id"] is not None:
        return CallTaskState("created", record["call_task_id"], responsible)
    if record["reason"]:
        return CallTaskState(f"not created ({record['reason']})")
    if outcome is not None:
        return _carried_out(outcome, responsible)
    if not dispatch.unanswered.task:
        return CallTaskState("not created (call tasks are off: dispatch.unanswered.task)")
    return CallTaskState("not created yet (queued for crm_sync)")


def _carried_out(outcome: CommandOutcome, responsible: int | None) -> CallTaskState:
    """A call task crm_sync took on (dispatch has not recorded its outcome yet, or it failed)."""
    if outcome.state == "pending":
        return CallTaskState("not created yet (crm_sync is creating it)")
    if outcome.outcome == "failed" or outcome.entity_id is None:
        return CallTaskState(f"not created ({outcome.reason or 'the portal refused it'})")
    return CallTaskState("created", outcome.entity_id, responsible)


def _time(at: datetime | None, zone: tzinfo) -> str:
    return DASH if at is None else fmt_time(at, zone)


def asked_lines(
    records: Sequence[Mapping[str, Any]],
    origin: str | None,
    dispatch: Dispatch,
    *,
    zone: tzinfo = UTC,
    names: Mapping[int, str] | None = None,
    outcomes: Mapping[str, CommandOutcome] | None = None,
) -> list[AskedLine]:
    """Lines of register rows: contacts, deals and call tasks linked to the portal at `origin`,
    times in `zone`, managers named by `names`; an unanswered request's call task as crm_sync's
    `outcomes` (by command id) tell where the register does not."""
    lines = []
    for r in records:
        status = request_status(r)
        task = CallTaskState("")
        if r["state"] == "unanswered":
            command = call_task_command(r["request_id"])
            task = call_task_state(r, (outcomes or {}).get(command), dispatch)
        deal, deal_id = _deal(r)
        lines.append(
            AskedLine(
                request_id=str(r["request_id"]),
                survey=r["survey"],
                product=r["sku"] or "",
                contact_id=r["contact_id"],
                contact_url=contact_url(origin, r["contact_id"]),
                manager=manager_label(r["responsible_id"], names),
                deal=deal,
                deal_url=deal_url(origin, deal_id),
                channel=r["channel"],
                status=status,
                sent=_time(r["sent_at"], zone),
                reminders=reminders(r),
                opened=_time(r["opened_at"], zone),
                answered=_time(r["answered_at"], zone),
                next_reminder=(
                    next_reminder(r, dispatch, zone) if status == "awaiting answer" else ""
                ),
                closed=DASH if r["answered_at"] else _time(r["closed_at"], zone),
                call_task=task.text,
                task_id=task.task_id,
                task_url=task_url(origin, task.responsible_id, task.task_id),
            )
        )
    return lines


@dataclass(frozen=True)
class AskedView:
    """Everything the "Asked" page shows."""

    funnel: Funnel
    change: AskedChange | None
    surveys: tuple[FunnelLine, ...]
    managers: tuple[FunnelLine, ...]
    periods: tuple[FunnelLine, ...]
    awaiting: tuple[AskedLine, ...]
    awaiting_total: int
    unanswered: tuple[AskedLine, ...]
    unanswered_total: int
    register: str
    """What the register holds on the portal, all states (`3 sent, 2 skipped`); empty when it
    holds nothing: dispatch never asked anyone."""


def register_summary(counts: Mapping[str, int]) -> str:
    """The register's requests per state, most first (`5 answered, 2 skipped`)."""
    held = sorted((item for item in counts.items() if item[1]), key=lambda x: (-x[1], x[0]))
    return ", ".join(f"{n} {state}" for state, n in held)


ASKED_CSV_HEADER: tuple[str, ...] = (
    "sent",
    "survey",
    "product",
    "contact",
    "contact link",
    "responsible",
    "deal",
    "deal link",
    "channel",
    "status",
    "reminders",
    "opened",
    "answered",
    "next reminder",
    "closed",
    "call task",
    "call task id",
    "call task link",
)


def asked_csv_row(line: AskedLine) -> list[str]:
    """`line`'s cells in the order of `ASKED_CSV_HEADER`, each safe to open in a spreadsheet
    (an empty cell where the page shows a dash)."""
    cells = [
        line.sent,
        line.survey,
        line.product,
        str(line.contact_id),
        line.contact_url or "",
        line.manager,
        line.deal,
        line.deal_url or "",
        line.channel,
        line.status,
        str(line.reminders),
        line.opened,
        line.answered,
        line.next_reminder,
        line.closed,
        line.call_task,
        "" if line.task_id is None else str(line.task_id),
        line.task_url or "",
    ]
    return [safe_cell("" if cell == DASH else cell) for cell in cells]


# --- when the survey behind an answer was sent ----------------------------------------------


class SentRequest(Protocol):
    """What dispatch's read module says of a request an answer is traced back to."""

    @property
    def request_id(self) -> uuid.UUID: ...
    @property
    def portal(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def sent_at(self) -> datetime | None: ...


def answer_sent_at(
    records: Sequence[Mapping[str, Any]],
    deals: Mapping[tuple[str, int], datetime],
    item_requests: Iterable[tuple[int, uuid.UUID]],
    requests: Iterable[SentRequest],
) -> dict[str, datetime]:
    """When the survey behind each answer of `records` (all-ratings records) was sent, by answer
    id; answers not asked by dispatch are left out. An NPS deal's answer is traced by the deal
    (`deals`: (portal, deal id) -> sent); a smart-process item's through the survey page request
    written into it (`item_requests`: (item id, request id)) to the register's request of the
    same portal (`requests`)."""
    sent = {r.request_id: r for r in requests}
    by_item: dict[tuple[str, int], datetime] = {}
    for item_id, request_id in item_requests:
        request = sent.get(request_id)
        if request is None or request.kind != "segment" or request.sent_at is None:
            continue
        key = (request.portal, item_id)
        by_item[key] = min(by_item.get(key, request.sent_at), request.sent_at)
    found: dict[str, datetime] = {}
    for r in records:
        key = (r["portal"], r["item_id"])
        at = deals.get(key) if r["entity_type_id"] == DEAL_ENTITY_TYPE_ID else by_item.get(key)
        if at is not None:
            found[r["answer_id"]] = at
    return found
