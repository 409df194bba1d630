"""`nps demo`: survey answers created in the sandbox portal, followed through the running pipeline
with a progress line, ending with the NPS report and what was written to the CRM.

Beside the smart-process answers, NPS deals are opened for won sales in the demo's NPS funnel and
answered: they end at the funnel's success or failure stage, detractors with a task for the head
of sales (the `stage` and `task` lines of the CRM summary, the "After the sale" segment row).
When the portal YAML's `dispatch.sales` watches the sandbox's sales funnel, dispatch produces the
NPS deals instead: the demo closes sales and follows them through dispatch, the local inbox and
the survey page (`demo_dispatch.py`), and answers no NPS deal by hand (its won sale would be
asked as well).

With dispatch running, the leads and tasks crm_sync created for the answers are followed
(`demo_followup.py`): the demo closes some and takes some in work in the sandbox, as their
managers would, and waits until dispatch shows it, so the dashboard's follow-up view has a loop
closed % and times; it ends with where the dashboard shows it all.

The NPS shown follows the reports' cosmetics rule: per product (cosmetics included) and per
segment, where a cosmetics segment has its counts but no NPS, and a note says why."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from services.crm_sync import read as crm_sync_read
from services.ingest import read as ingest_read
from services.ops.demo_dispatch import DispatchDemoError, dispatch_ready, run_dispatch_demo
from services.ops.demo_followup import FollowupDemoError, run_followup_demo
from services.ops.demo_plan import (
    dashboard_lines,
    dispatch_left_out,
    followed_expected,
    nps_deals,
    where_to_look,
)
from services.reports.settings import ReportsSettings
from services.scoring.read import (
    ItemRef,
    ReportQuery,
    answer_ids,
    choices,
    render_table,
    run_report,
    scored_items,
)
from shared.db import Conn, create_pool
from shared.dispatch_config import Dispatch
from shared.events import DEAL_ENTITY_TYPE_ID
from shared.portal_config import ConfigError, PortalConfig, load_portal_config
from shared.settings import Settings

NAMES_WAIT_S = 90.0
"""How long the demo waits for the managers' names (ingest reads them every 30 s)."""


class DemoError(RuntimeError):
    """The demo cannot run or did not finish; the message says what to do."""


@dataclass(frozen=True)
class Progress:
    created: int
    scored: int
    actions_done: int
    actions_pending: int

    def line(self) -> str:
        return (
            f"answers scored {self.scored}/{self.created} · "
            f"CRM actions done {self.actions_done}, pending {self.actions_pending}"
        )


@dataclass(frozen=True)
class Created:
    """What the demo created in the sandbox portal."""

    member_id: str
    entity_type_id: int
    """The smart process the survey items are in (the portal YAML's `survey.entity_type_id`)."""
    items: list[int]
    deals: list[int]

    @property
    def answers(self) -> int:
        return len(self.items) + len(self.deals)


def _sandbox_url(settings: Settings) -> str:
    return f"http://{settings.sandbox_host}:{settings.sandbox_port}"


def _portal_config(settings: Settings) -> PortalConfig:
    try:
        return load_portal_config(settings.portal_config_path())
    except ConfigError as exc:
        raise DemoError(str(exc)) from None


async def _create_answers(
    settings: Settings, config: PortalConfig, count: int, deals: int
) -> Created:
    base = _sandbox_url(settings)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            info = (await http.get("/sandbox/info")).raise_for_status().json()
            if not info.get("nps_deal_funnels"):
                deals = 0  # the portal YAML names no deal survey: smart-process answers only
            reply = await http.post(
                "/sandbox/answers", json={"count": count, "spread_days": 90, "deals": deals}
            )
            if reply.status_code == httpx.codes.CONFLICT:
                raise DemoError(f"the sandbox portal refused: {reply.json().get('detail')}")
            body = reply.raise_for_status().json()
    except httpx.HTTPError as exc:
        raise DemoError(
            f"the sandbox portal does not answer at {base} ({type(exc).__name__}); "
            "start the pipeline with `make run` in another terminal first"
        ) from None
    return Created(
        str(info["member_id"]),
        config.survey.entity_type_id,
        list(body["created"]),
        list(body.get("deals", [])),
    )


async def nps_summary(conn: Conn, portal: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo's NPS rows of `portal`: by product, then by segment."""
    products = await run_report(conn, ReportQuery(by="product", portal=portal))
    segments = await run_report(conn, ReportQuery(by="segment", portal=portal))
    return [row.as_dict() for row in products], [row.as_dict() for row in segments]


def nps_text(products: list[dict[str, Any]], segments: list[dict[str, Any]]) -> str:
    """The NPS part of the demo's summary: both tables with their headings."""
    return "\n".join(
        [
            "NPS by product (all answers in the sandbox portal):",
            render_table(products, "product"),
            "",
            "NPS by segment (cosmetics: per product only):",
            render_table(segments, "segment"),
        ]
    )


def _refs(created: Created) -> list[ItemRef]:
    """The demo's answers as scoring knows them: smart-process items, then NPS deals."""
    entity = created.entity_type_id
    return [(entity, i) for i in created.items] + [(DEAL_ENTITY_TYPE_ID, d) for d in created.deals]


async def _progress(pool: asyncpg.Pool, created: Created) -> Progress:
    refs = _refs(created)
    async with pool.acquire() as conn:
        scored = await scored_items(conn, created.member_id, refs)
        answers = await answer_ids(conn, created.member_id, refs)
        actions = await crm_sync_read.actions(conn, created.member_id, answers)
        states = await crm_sync_read.action_states(conn, created.member_id)
    done = sum(1 for a in actions if a.state == "done")
    return Progress(created.answers, len(scored), done, states.pending)


async def _crm_outcomes(conn: Conn, created: Created) -> tuple[dict[str, int], int, int]:
    """What crm_sync did for the demo's answers (`action:outcome` -> how many), how many contact
    values it left alone for them, and how many NPS deals' stages it left alone."""
    portal = created.member_id
    entity = created.entity_type_id
    items = await answer_ids(conn, portal, [(entity, i) for i in created.items])
    deals = await answer_ids(conn, portal, [(DEAL_ENTITY_TYPE_ID, d) for d in created.deals])
    done = Counter(
        f"{a.action}:{a.outcome}"
        for a in await crm_sync_read.actions(conn, portal, items + deals)
        if a.state == "done"
    )
    fields = await crm_sync_read.conflict_count(conn, portal=portal, answer_ids=items)
    stages = await crm_sync_read.conflict_count(conn, portal=portal, answer_ids=deals)
    return dict(sorted(done.items())), fields or 0, stages or 0


async def _settle(
    pool: asyncpg.Pool, created: Created, timeout_s: float, echo: Callable[[str], None]
) -> None:
    """Wait until every answer is scored and no CRM action is pending, printing the progress."""
    deadline = time.monotonic() + timeout_s
    last: Progress | None = None
    steady = 0
    while True:
        progress = await _progress(pool, created)
        settled = progress.scored == progress.created and progress.actions_pending == 0
        steady = steady + 1 if settled and progress == last else 0
        if progress != last:
            echo(progress.line())
        last = progress
        if steady >= 3:
            return
        if time.monotonic() > deadline:
            raise DemoError(
                f"not settled after {timeout_s:.0f} s ({progress.line()}); check that every "
                "service of `make run` is up and look at `nps dlq list`"
            )
        await asyncio.sleep(0.5)


def _dispatch_ready_url(settings: Settings) -> str:
    return f"http://{settings.health_host}:{settings.dispatch_health_port}/readyz"


async def _show_dispatch(
    settings: Settings,
    pool: asyncpg.Pool,
    sales: int,
    timeout_s: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """The dispatch part (`demo_dispatch.py`), then where to look."""
    try:
        shown = await run_dispatch_demo(
            _sandbox_url(settings), pool, sales=sales, timeout_s=timeout_s, echo=echo
        )
    except DispatchDemoError as exc:
        raise DemoError(str(exc)) from None
    except httpx.HTTPError as exc:
        raise DemoError(
            f"the sandbox portal or the survey page stopped answering ({type(exc).__name__})"
            " while the demo followed dispatch; check that every process of `make run` is up"
        ) from None
    echo("")
    for line in where_to_look(_sandbox_url(settings), shown["survey_page"], shown["deal"]):
        echo(line)
    return shown


async def _names(
    pool: asyncpg.Pool, portal: str, timeout_s: float, echo: Callable[[str], None]
) -> list[int]:
    """Wait until the portal told the names of the managers the answers name (the dashboard
    shows them by name); the ids still without one when the wait ends."""
    deadline = time.monotonic() + min(timeout_s, NAMES_WAIT_S)
    while True:
        async with pool.acquire() as conn:
            managers = (await choices(conn, portal)).managers
            names = await ingest_read.user_names(conn, portal)
        missing = [manager for manager in managers if manager not in names]
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    known = len(managers) - len(missing)
    echo(
        f"\nManagers by name: {known} of {len(managers)} known"
        + (
            f" (no name yet for user {', '.join(map(str, missing))}: ingest reads them with"
            " user.get every 30 s)"
            if missing
            else ""
        )
    )
    return missing


async def _dispatch_up(settings: Settings) -> bool:
    try:
        await dispatch_ready(_dispatch_ready_url(settings))
    except DispatchDemoError:
        return False
    return True


async def _show_followup(
    settings: Settings,
    pool: asyncpg.Pool,
    created: Created,
    *,
    crm: dict[str, int],
    since: datetime,
    timeout_s: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """The follow-up part (`demo_followup.py`)."""
    try:
        return await run_followup_demo(
            _sandbox_url(settings),
            pool,
            portal=created.member_id,
            since=since,
            expected=followed_expected(crm),
            timeout_s=timeout_s,
            echo=echo,
        )
    except FollowupDemoError as exc:
        raise DemoError(str(exc)) from None
    except httpx.HTTPError as exc:
        raise DemoError(
            f"the sandbox portal stopped answering ({type(exc).__name__}) while the demo followed"
            " the leads and tasks; check that every process of `make run` is up"
        ) from None


async def run_demo(
    settings: Settings,
    count: int,
    timeout_s: float = 300.0,
    *,
    echo: Callable[[str], None] = print,
    deals: int | None = None,
    sales: int = 0,
) -> dict[str, Any]:
    """Create `count` answers and answered NPS deals (`deals`; None: `nps_deals` decides), wait
    until the pipeline has settled, print and return a summary; then, with `sales` and a
    `dispatch.sales` for the sandbox's sales funnel, close that many sales and follow them
    through dispatch (`demo_dispatch.py`); with dispatch running, some of the leads and tasks
    created are closed or taken in work and followed (`demo_followup.py`)."""
    if not settings.sandbox:
        raise DemoError(
            "nps demo creates answers in the sandbox portal; BITRIX24_WEBHOOK_URL points at a real"
            " portal, so unset it (or run `nps demo` against a `make run` without it)"
        )
    config = _portal_config(settings)
    choice = nps_deals(config, deals)
    left_out, why = dispatch_left_out(config, sales, datetime.now(UTC))
    if not left_out:
        try:
            await dispatch_ready(_dispatch_ready_url(settings))
        except DispatchDemoError as exc:
            raise DemoError(str(exc)) from None
    since = datetime.now(UTC).replace(microsecond=0)
    created = await _create_answers(settings, config, count, choice.count)
    echo(
        f"created {len(created.items)} survey answers and {len(created.deals)} answered NPS deals"
        " in the sandbox portal; following them…"
    )
    if choice.note:
        echo(choice.note)
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
    try:
        await _settle(pool, created, timeout_s, echo)
        async with pool.acquire() as conn:
            rows, segments = await nps_summary(conn, created.member_id)
            crm, conflicts, stages = await _crm_outcomes(conn, created)
        summary: dict[str, Any] = {
            "answers": len(created.items),
            "deals": len(created.deals),
            "crm": crm,
            "conflicts": conflicts,
            "stage_conflicts": stages,
            "report": rows,
            "segments": segments,
        }
        echo("\n" + nps_text(rows, segments))
        echo("")
        for line in crm_lines(crm, conflicts, stages):
            echo(line)
        if why:
            echo(f"\n{why}")
        if not left_out:
            summary["dispatch"] = await _show_dispatch(settings, pool, sales, timeout_s, echo)
        if not (config.dispatch or Dispatch()).followup.enabled:
            echo("\nFollow-up left out: dispatch.followup.enabled is false in the portal YAML")
        elif not await _dispatch_up(settings):
            echo("\nFollow-up left out: dispatch is not running (`make run` runs it)")
        else:
            summary["followup"] = await _show_followup(
                settings, pool, created, crm=crm, since=since, timeout_s=timeout_s, echo=echo
            )
        summary["unnamed"] = await _names(pool, created.member_id, timeout_s, echo)
        reports = ReportsSettings()
        echo("")
        for line in dashboard_lines(f"http://{reports.host}:{reports.port}"):
            echo(line)
    finally:
        await pool.close()
    return summary


OUTCOME_MEANINGS: dict[str, str] = {
    "created": "created",
    "existing": "found already created (a retry), not created again",
    "patched": "every field it had to change written",
    "unchanged": "nothing to change",
    "conflict": "at least one field left alone (the others written)",
    "skipped": "older than the answer already in the contact, nothing written",
}
"""What each outcome of a CRM action means, as the demo prints it."""


STAGE_MEANINGS: dict[str, str] = {
    "patched": "NPS deal moved to its funnel's success or failure stage",
    "unchanged": "NPS deal already at the stage its answer calls for",
    "conflict": "NPS deal left where a person had moved it",
}
"""What an outcome of the `stage` action means, where it differs from the others'."""


def crm_lines(crm: dict[str, int], conflicts: int, stages: int = 0) -> list[str]:
    """What the CRM got: actions (one per answer and kind) by outcome, then the legacy values
    left alone, which count contact fields, not answers, and the NPS deals' stages left alone."""
    lines = ["What the CRM got for these answers (actions: one per answer and kind):"]
    for key, count in crm.items():
        action, outcome = key.split(":")
        meaning = (STAGE_MEANINGS if action == "stage" else OUTCOME_MEANINGS).get(
            outcome, OUTCOME_MEANINGS.get(outcome, outcome)
        )
        lines.append(f"  {action:<10} {outcome:<10} {count:>5}  {meaning}")
    patches = crm.get("contact:conflict", 0)
    left_alone = f"  legacy values left alone (nps conflicts): {conflicts} contact field(s)"
    if patches:
        left_alone += f", in the {patches} contact patch(es) with outcome conflict"
    lines.append(left_alone)
    if stages:
        lines.append(f"  NPS deal stages left alone (nps conflicts): {stages}")
    return lines
