"""What `nps demo` decides and says about dispatch (pure: no I/O): whether it answers NPS deals by
hand, whether dispatch may send now, which e-mail belongs to which request and where its survey
link is, what the customer answers on the form, and the progress and register lines it prints.

The demo plays the customers of the sales it closes: it follows the link of some e-mails and
answers like a person (a detractor first), opens one more and leaves it, and leaves the rest.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from shared.dispatch_config import WEEKDAYS, SendWindow
from shared.portal_config import PortalConfig

SANDBOX_SALES_FUNNEL = 0
"""The funnel of the sandbox's sales: `/sandbox/close-sales` closes deals of it, and the won
sales `/sandbox/answers` opens NPS deals for are in it."""
DEFAULT_DEALS = 60
"""NPS deals answered by hand when dispatch does not produce them."""

CUSTOMERS: tuple[tuple[int, str], ...] = (
    (3, "Delivery took three weeks and nobody called back."),
    (10, "The training was excellent, the machine works perfectly."),
    (8, "Good equipment, but the price is high."),
)
"""What the customers answer on the survey page, in order: a detractor first (a failure stage
and a task for the head of sales), a promoter, a passive."""
OPENED_ONLY = 1
"""E-mails whose link the demo opens after those answered, without answering (state `opened`)."""
MOVED = {"S": "success", "F": "failure"}
"""A deal's stage semantics once it left the funnel's in-progress stages."""

_SURVEY_PATH = re.compile(r".*/s/[^/]+")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_SCORE = re.compile(r'name="score" value="(\d+)"')


@dataclass(frozen=True)
class DealsChoice:
    """How many NPS deals the demo opens and answers by hand, and why, when it matters."""

    count: int
    note: str | None = None


def watches_sandbox_sales(config: PortalConfig) -> bool:
    """Whether dispatch asks when a sale of the sandbox's sales funnel is won."""
    dispatch = config.dispatch
    return dispatch is not None and dispatch.sale_trigger(SANDBOX_SALES_FUNNEL) is not None


def nps_deals(config: PortalConfig, asked: int | None) -> DealsChoice:
    """The hand-answered NPS deals: `asked` when given, else none when dispatch produces them
    (each hand-answered deal's won sale would be asked by dispatch too), else `DEFAULT_DEALS`."""
    watched = watches_sandbox_sales(config)
    if asked is None:
        if watched:
            return DealsChoice(
                0,
                "NPS deals: dispatch opens them for the sales the demo closes below, so none is"
                " answered by hand (dispatch would ask each hand-answered deal's sale as well)",
            )
        return DealsChoice(DEFAULT_DEALS)
    if watched and asked:
        return DealsChoice(
            asked,
            f"the {asked} NPS deals answered by hand are for won sales of funnel"
            f" {SANDBOX_SALES_FUNNEL}, which dispatch watches: it asks their customers too",
        )
    return DealsChoice(asked)


def dispatch_left_out(config: PortalConfig, sales: int, now: datetime) -> tuple[bool, str | None]:
    """Whether the demo shows dispatch by closing `sales` sales, and, when the portal YAML asks
    for it but the demo cannot show it, why not."""
    dispatch = config.dispatch
    if dispatch is None or not dispatch.sales or sales <= 0:
        return True, None
    trigger = dispatch.sale_trigger(SANDBOX_SALES_FUNNEL)
    if trigger is None:
        funnels = ", ".join(str(t.funnel) for t in dispatch.sales)
        return True, (
            f"dispatch.sales watches funnel(s) {funnels}, and the sandbox closes sales of funnel"
            f" {SANDBOX_SALES_FUNNEL} only: the demo leaves dispatch out"
        )
    surveys = [trigger.survey] if trigger.survey else []
    if any(dispatch.channel_for(survey) == "portal" for survey in surveys) or (
        not surveys and dispatch.channel == "portal"
    ):
        return True, (
            "dispatch sends through the portal's robots (dispatch.channel: portal), which the"
            " sandbox does not run: the demo leaves dispatch out (the links are in the deals'"
            " link field, the triggers fired in /sandbox/triggers)"
        )
    closed = window_closed(now, dispatch.window, config.portal.timezone)
    return closed is not None, closed


def window_closed(now: datetime, window: SendWindow, timezone: str) -> str | None:
    """Why dispatch sends nothing at `now` (outside `dispatch.window`), or None: it may send."""
    local = now.astimezone(ZoneInfo(timezone))
    day = WEEKDAYS[local.weekday()]
    if day in window.weekdays and window.start <= local.time() < window.end:
        return None
    days = "every day" if len(window.weekdays) == len(WEEKDAYS) else ", ".join(window.weekdays)
    return (
        f"dispatch sends only inside dispatch.window ({window.start:%H:%M}-{window.end:%H:%M},"
        f" {days}, {timezone}) and it is {day} {local:%H:%M} there now, so the demo leaves"
        " dispatch out: run it inside the window, or widen dispatch.window in the portal YAML"
    )


def request_of(message_id: str | None, request_ids: Iterable[str]) -> str | None:
    """The request an e-mail was sent for: its Message-ID is `<request id>.<send number>@b24-nps>`
    (docs/dispatch.md, One message per request)."""
    if not message_id:
        return None
    local = message_id.strip().strip("<>").partition("@")[0]
    rid = local.rpartition(".")[0]
    return rid if rid in set(request_ids) else None


def survey_link(links: Sequence[str]) -> str | None:
    """The survey form's link among an e-mail's links (`…/s/<token>`): the "open the survey"
    link, else a one-click score link without its score; never the opt-out link."""
    fallback = None
    for link in links:
        parts = urlsplit(link)
        if not _SURVEY_PATH.fullmatch(parts.path) or parts.path.endswith("/optout"):
            continue
        if not parts.query:
            return link
        if fallback is None and parts.query.startswith("score="):
            fallback = urlunsplit(parts._replace(query="", fragment=""))
    return fallback


def csrf_field(html: str) -> str | None:
    """The form's CSRF field, as a browser would send it back."""
    found = _CSRF.search(html)
    return found.group(1) if found else None


def score_choices(html: str) -> list[int]:
    """The scores the form offers (one question: an NPS deal's or an equipment survey's)."""
    return sorted({int(value) for value in _SCORE.findall(html)})


def on_scale(wanted: int, offered: Sequence[int]) -> int:
    """`wanted` (0-10) on the form's scale: at the same place between its lowest and highest
    score, so a detractor stays one (3 is 4 on a 1-10 scale, 0 on a binary one)."""
    if not offered:
        raise ValueError("the form offers no score")
    low, high = min(offered), max(offered)
    target = low + round(wanted / 10 * (high - low))
    return min(offered, key=lambda score: (abs(score - target), score))


def customers(
    rows: Sequence[Mapping[str, Any]], links: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """Which requests' e-mails the demo answers (one per `CUSTOMERS`) and which it only opens
    (`OPENED_ONLY`): NPS deals' surveys with their e-mail in the inbox, by sale."""
    ready = [
        str(row["request_id"])
        for row in sorted(rows, key=lambda r: (r["sale_deal_id"] or 0, str(r["request_id"])))
        if row["kind"] == "deal"
        and row["nps_deal_id"] is not None
        and str(row["request_id"]) in links
    ]
    answer = ready[: len(CUSTOMERS)]
    return answer, ready[len(answer) : len(answer) + OPENED_ONLY]


SENT_STATES = frozenset({"sent", "opened", "answered", "reminded", "unanswered"})


@dataclass(frozen=True)
class DispatchProgress:
    """The demo's sales as the register shows them."""

    sales: int
    """Sales the demo closed."""
    registered: int
    """Of them, the ones dispatch has requests for."""
    states: Mapping[str, int]
    """The demo's requests per state."""
    moved: int = 0
    """NPS deals answered on the survey page that the pipeline moved to a final stage."""
    answering: int = 0
    """NPS deals answered on the survey page."""

    @classmethod
    def of(
        cls,
        sales: Sequence[int],
        rows: Sequence[Mapping[str, Any]],
        moved: int = 0,
        answering: int = 0,
    ) -> DispatchProgress:
        states = Counter(str(row["state"]) for row in rows)
        registered = len({row["sale_deal_id"] for row in rows} & set(sales))
        return cls(len(sales), registered, dict(states), moved, answering)

    @property
    def requests(self) -> int:
        return sum(self.states.values())

    @property
    def sent(self) -> int:
        return sum(n for state, n in self.states.items() if state in SENT_STATES)

    @property
    def sending_done(self) -> bool:
        """Every sale is in the register and no request waits to be sent."""
        return self.registered == self.sales and not self.states.get("scheduled")

    def line(self) -> str:
        text = (
            f"sales in the register {self.registered}/{self.sales} · requests {self.requests}:"
            f" scheduled {self.states.get('scheduled', 0)}, sent {self.sent},"
            f" answered {self.states.get('answered', 0)}"
        )
        for state in ("skipped", "failed", "expired"):
            if self.states.get(state):
                text += f", {state} {self.states[state]}"
        if self.answering:
            text += f" · NPS deals moved {self.moved}/{self.answering}"
        return text


def register_lines(
    rows: Sequence[Mapping[str, Any]], counts: Mapping[str, int], stages: Mapping[int, str]
) -> list[str]:
    """The demo's requests (survey, state, sends, NPS deal and where it went, sale, reason),
    then the register's counts of every request."""
    lines = [
        "The register for these sales (nps survey list):",
        f"  {'survey':<18} {'channel':<7} {'state':<10} {'sends':>5} {'NPS deal':>8}"
        f" {'stage':<8} {'sale':>5}  reason",
    ]
    ordered = sorted(rows, key=lambda r: (r["sale_deal_id"] or 0, r["kind"] != "deal", r["survey"]))
    for row in ordered:
        deal = row["nps_deal_id"]
        stage = "" if deal is None else stages.get(deal, "")
        line = (
            f"  {str(row['survey'])[:18]:<18} {row['channel']:<7} {row['state']:<10}"
            f" {row['sends']:>5} {'' if deal is None else deal:>8} {stage:<8}"
            f" {row['sale_deal_id'] or '':>5}  {row['reason'] or ''}"
        )
        lines.append(line.rstrip())
    every = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none"
    lines.append(f"  every request in the register: {every}")
    return lines


def survey_page(link: str) -> str:
    """The survey page's address a personal link is on (without the link's own path)."""
    parts = urlsplit(link)
    prefix = parts.path.rsplit("/s/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, prefix, "", "")) or link


def where_to_look(sandbox_url: str, page: str | None, nps_deal: int | None) -> list[str]:
    """Where a person sees what dispatch did, after the demo."""
    places = [
        ("nps survey list", "the register: every request, its state, sends and reason"),
        (f"{sandbox_url}/inbox", "the e-mails dispatch sent (the sandbox's local inbox)"),
    ]
    if page:
        places.append((page, "the survey page the e-mails' links open (/s/<token>)"))
    places.append(("nps report --by segment", "the NPS, with the answers given on the survey page"))
    if nps_deal is not None:
        places.append(
            (
                f"{sandbox_url}/crm/deal/details/{nps_deal}/",
                "an answered NPS deal: its score, comment, stage moves and tasks",
            )
        )
    width = max(len(place) for place, _ in places)
    return ["Where to look:", *(f"  {place:<{width}}  {what}" for place, what in places)]


# --- the follow-up (did anyone act?) --------------------------------------------------------

FOLLOWED_BY_DEMO = ("service", "marketing", "task")
"""The CRM actions of the demo's answers that create a lead or a task dispatch follows."""


def followed_expected(crm: Mapping[str, int]) -> int:
    """How many leads and tasks the follow-up records for the demo's answers: the created (or
    found created) leads and tasks of its CRM summary (`action:outcome` -> count)."""
    return sum(
        crm.get(f"{action}:{outcome}", 0)
        for action in FOLLOWED_BY_DEMO
        for outcome in ("created", "existing")
    )


@dataclass(frozen=True)
class Handling:
    """What the demo's people do in the portal with some of the leads and tasks b24-nps created:
    move `leads` and `tasks` (ids) `to` a state (`/sandbox/handle`'s `to`)."""

    to: str
    leads: tuple[int, ...] = ()
    tasks: tuple[int, ...] = ()


def handling(leads: Sequence[int], tasks: Sequence[int]) -> list[Handling]:
    """The oldest third of the open leads closed, the next third taken in work, the rest left
    open (overdue later, when their SLA runs out); the older half of the open tasks completed.
    Ids sorted, so a run is the same every time."""
    lead_ids, task_ids = sorted(leads), sorted(tasks)
    closed = -(-len(lead_ids) // 3)
    in_work = len(lead_ids) // 3
    done = -(-len(task_ids) // 2)
    steps = [
        Handling("closed", tuple(lead_ids[:closed]), tuple(task_ids[:done])),
        Handling("in_work", tuple(lead_ids[closed : closed + in_work])),
    ]
    return [step for step in steps if step.leads or step.tasks]


def handled_seen(steps: Sequence[Handling], states: Mapping[tuple[str, int], str]) -> int:
    """How many of the handled leads and tasks the follow-up shows in the state they were moved
    to (`states`: (entity type, id) -> state as last read)."""
    return sum(
        1
        for step in steps
        for kind, ids in (("lead", step.leads), ("task", step.tasks))
        for entity in ids
        if states.get((kind, entity)) == step.to
    )


def _pct(part: int, whole: int) -> str:
    return "—" if whole == 0 else f"{100 * part / whole:.1f} %"


def _hours(hours: float | None) -> str:
    if hours is None:
        return "—"
    minutes = round(hours * 60)
    return f"{minutes} min" if minutes < 120 else f"{hours:.1f} h"


def followup_lines(total: Mapping[str, Any], handled: int, seconds: float) -> list[str]:
    """The follow-up part's summary: the loop of the demo's leads and tasks (a
    `loop_closed_total` row), and how fast the handled ones were seen."""
    followed, closed = total["followed"], total["closed"]
    return [
        f"Follow-up (did anyone act?): {followed} leads and tasks b24-nps created are followed;"
        f" the {handled} the demo moved in the portal were seen in {seconds:.0f} s (the portal's"
        " update events, ONCRMLEADUPDATE / ONTASKUPDATE, through ingest)",
        f"  open {total['open']} · in work {total['in_work']} · closed {closed}"
        f" · loop closed {_pct(closed, followed)}"
        f" · median to first change {_hours(total['median_hours_to_change'])}"
        f" · median to close {_hours(total['median_hours_to_close'])}",
    ]


def dashboard_lines(reports_url: str) -> list[str]:
    """Where the dashboard shows the demo's data (`nps run reports`, behind its token)."""
    base = reports_url.rstrip("/")
    places = [
        (f"{base}/ratings", "every answer, its comment and manager; the CSV export"),
        (f"{base}/asked", "asked and not answered: the awaiting and the unanswered lists"),
        (f"{base}/followup", "did anyone act: loop closed %, times, the overdue ones"),
        (f"{base}/managers", "NPS per manager, by name"),
    ]
    width = max(len(place) for place, _ in places)
    return [
        "The dashboard (the token `nps run reports` printed, or REPORTS_TOKEN):",
        *(f"  {place:<{width}}  {what}" for place, what in places),
    ]
