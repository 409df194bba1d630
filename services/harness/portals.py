"""Several sandbox portals served in application mode (`NPS_MODE=app`, docs/app.md), for
`nps chaos --portals N`.

The stack (`Stack.portals`) runs the sandbox with N named portals on which the application is
registered, the application (`nps run app`) and the pipeline. Each portal installs the
application through its install flow, as its administrator would from the printed link (the
install page's form POSTed to the application's install URL, `BX24.installFinish()`, then
`ONAPPINSTALL` to its event URL). Answers are then created in every portal while the faults run,
and the verdict is taken per portal (`verdict.compute` on each portal's own paths and rows:
lost, duplicated, overwritten) plus `crossed`, what landed on a portal other than the answer's
(`crossing.py`), and the dead letters of the whole run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import httpx

from services.crm_sync import read as crm_sync_read
from services.crm_sync.read import action_states
from services.harness.chaos import (
    WARM_UP_ANSWERS,
    ChaosError,
    all_ready,
    create_answers,
    faults_while,
    settle_with,
)
from services.harness.crossing import DEAL, Created, PortalFacts, crossings
from services.harness.stack import Stack
from services.harness.verdict import Verdict, compute
from services.scoring.read import current_answers, scored_items
from shared.portal_config import PortalConfig

PORTAL_NAMES: tuple[str, ...] = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
)
"""The sandbox portals' names, in order: `--portals N` runs the first N."""
MAX_PORTALS = len(PORTAL_NAMES)
INSTALL_TIMEOUT_S = 30.0
FIGURES = (
    "items",
    "deals",
    "answers",
    "leads",
    "tasks",
    "patches",
    "lost",
    "duplicated",
    "overwritten",
)
"""A portal's figures, as its line shows them (and the run's line, summed)."""


def portal_names(count: int) -> tuple[str, ...]:
    """The names of `count` portals; at least two (a crossing needs two), at most MAX_PORTALS."""
    if not 2 <= count <= MAX_PORTALS:
        raise ValueError(
            f"portals: expected 2 to {MAX_PORTALS} (two at least, so that one portal's work could"
            f" cross to another), got {count}"
        )
    return PORTAL_NAMES[:count]


@dataclass(frozen=True)
class Installed:
    """A portal the application is installed on."""

    name: str
    member_id: str
    install_url: str
    """The link its administrator opens to install the application."""


async def install(stack: Stack, name: str) -> Installed:
    """The application installed on portal `name` through its install flow (module doc), once
    its `ONAPPINSTALL` has reached the application."""
    url = stack.portal_url(name)
    async with httpx.AsyncClient(timeout=60) as http:
        body = (await http.post(f"{url}/sandbox/install", json={})).raise_for_status().json()
        page = body.get("install_page") or {}
        if not body.get("installed") or not page.get("calls_install_finish"):
            raise ChaosError(f"{name}: the install did not finish: {page}")
        deadline = time.monotonic() + INSTALL_TIMEOUT_S
        while True:
            events = (await http.get(f"{url}/sandbox/events")).raise_for_status().json()
            told = [d for d in events["deliveries"] if d.get("event") == "ONAPPINSTALL"]
            if any(d.get("status") == "delivered" for d in told):
                break
            if any(d.get("status") == "failed" for d in told) or time.monotonic() > deadline:
                raise ChaosError(f"{name}: ONAPPINSTALL did not reach the application: {told}")
            await asyncio.sleep(0.2)
    return Installed(name, str(body["member_id"]), f"{url}/install")


@dataclass
class PortalsVerdict:
    """The verdict of a run on several portals: each portal's own (`portals`, by name), what
    crossed between them, and the dead letters of the whole run."""

    portals: dict[str, Verdict] = field(default_factory=dict)
    crossed: int = 0
    dlq: int = 0
    details: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, text: str) -> None:
        self.details.setdefault(kind, []).append(text)

    def _sum(self, figure: str) -> int:
        return sum(int(getattr(verdict, figure)) for verdict in self.portals.values())

    @property
    def lost(self) -> int:
        return self._sum("lost")

    @property
    def duplicated(self) -> int:
        return self._sum("duplicated")

    @property
    def overwritten(self) -> int:
        return self._sum("overwritten")

    @property
    def ok(self) -> bool:
        """Every portal's verdict clean and nothing crossed."""
        return all(v.ok for v in self.portals.values()) and self.crossed == 0

    def line(self) -> str:
        totals = " · ".join(f"{figure} {self._sum(figure)}" for figure in FIGURES)
        return f"portals {len(self.portals)} · {totals} · crossed {self.crossed} · dlq {self.dlq}"

    def portal_lines(self) -> list[str]:
        """One line per portal: its member_id and figures."""
        return [
            f"portal {name} ({verdict.portal}): "
            + " · ".join(f"{figure} {getattr(verdict, figure)}" for figure in FIGURES)
            for name, verdict in self.portals.items()
        ]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _contacts(http: httpx.AsyncClient, webhook_url: str) -> frozenset[int]:
    found: set[int] = set()
    start: int | None = 0
    while start is not None:
        reply = await http.post(
            f"{webhook_url}crm.contact.list.json",
            json={"select": ["ID"], "order": {"ID": "ASC"}, "start": start},
        )
        body = reply.raise_for_status().json()
        found.update(int(contact["ID"]) for contact in body["result"])
        start = body.get("next")
    return frozenset(found)


def _created(leads: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]]) -> list[Created]:
    created = [
        Created(
            "lead",
            int(lead["ID"]),
            origin=lead.get("ORIGIN_ID") or None,
            contact=int(lead["CONTACT_ID"]) if lead.get("CONTACT_ID") else None,
        )
        for lead in leads
    ]
    for task in tasks:
        bound = [str(binding) for binding in task.get("UF_CRM_TASK") or [] if binding]
        contacts = [int(b[2:]) for b in bound if b.startswith("C_")]
        created.append(
            Created(
                "task",
                int(task["ID"]),
                origin=task.get("XML_ID") or None,
                contact=contacts[0] if contacts else None,
                deals=tuple(int(b[2:]) for b in bound if b.startswith("D_")),
            )
        )
    return created


async def portal_facts(
    url: str, pool: asyncpg.Pool, name: str, key: str, config: PortalConfig
) -> PortalFacts:
    """What portal `name` (its paths at `url`) holds, and what the pipeline recorded under its
    key: the facts `crossings` compares."""
    entity_type = config.survey.entity_type_id
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        info = (await http.get("/sandbox/info")).raise_for_status().json()
        items = (await http.get("/sandbox/items", params={"entity_type_id": entity_type})).json()
        deals = (await http.get("/sandbox/deals")).json()["deals"]
        leads = (await http.get("/sandbox/leads")).json()["leads"]
        tasks = (await http.get("/sandbox/tasks")).json()["tasks"]
        contacts = await _contacts(http, str(info["webhook_url"]))
    async with pool.acquire() as conn:
        scored = await scored_items(conn, key)
        answers = await current_answers(conn, key)
        actions = await crm_sync_read.actions(conn, key)
        writes = await crm_sync_read.portal_writes(conn, key)
    return PortalFacts(
        name=name,
        items=frozenset(
            {(entity_type, int(item["id"])) for item in items["items"]}
            | {(DEAL, int(deal["ID"])) for deal in deals}
        ),
        contacts=contacts,
        created=tuple(_created(leads, tasks)),
        scored=frozenset(scored),
        answer_contacts=frozenset(a.contact_id for a in answers if a.contact_id),
        actions=frozenset(a.action_id for a in actions),
        written_contacts=frozenset(w.contact_id for w in writes),
    )


async def judge(
    stack: Stack, config: PortalConfig, installed: Sequence[Installed], pool: asyncpg.Pool, dlq: int
) -> tuple[PortalsVerdict, int]:
    """The verdict of every portal, what crossed, and the actions still pending."""
    verdict = PortalsVerdict(dlq=dlq)
    facts: list[PortalFacts] = []
    pending = 0
    for portal in installed:
        url = stack.portal_url(portal.name)
        one = await compute(url, pool, config)
        if one.portal != portal.member_id:
            raise ChaosError(f"{portal.name}: member_id {one.portal}, not {portal.member_id}")
        verdict.portals[portal.name] = one
        for kind, notes in one.details.items():
            for note in notes:
                verdict.note(kind, f"{portal.name}: {note}")
        facts.append(await portal_facts(url, pool, portal.name, portal.member_id, config))
        async with pool.acquire() as conn:
            pending += (await action_states(conn, portal.member_id)).pending
    for note in crossings(facts):
        verdict.crossed += 1
        verdict.note("crossed", note)
    return verdict, pending


async def settle_portals(
    stack: Stack,
    config: PortalConfig,
    installed: Sequence[Installed],
    *,
    timeout_s: float,
    progress: Callable[[PortalsVerdict], Awaitable[None] | None] | None = None,
) -> PortalsVerdict:
    """`chaos.settle` for the portals: their verdict once nothing is pending and it stays."""

    async def look(pool: asyncpg.Pool, dlq: int) -> tuple[PortalsVerdict, int]:
        return await judge(stack, config, installed, pool, dlq)

    return await settle_with(stack, look, PortalsVerdict(), timeout_s=timeout_s, progress=progress)


async def install_all(
    stack: Stack, say: Callable[[str], None] = lambda _text: None
) -> list[Installed]:
    """The application installed on every portal of the stack, one after the other."""
    installed = []
    for name in stack.portals:
        say(f"installing the application on {name}: {stack.portal_url(name)}/install …")
        portal = await install(stack, name)
        say(f"  {name} installed (member_id {portal.member_id})")
        installed.append(portal)
    return installed


async def warm_up_portals(
    stack: Stack, config: PortalConfig, installed: Sequence[Installed]
) -> None:
    """A few answers through every portal first: each process serves every portal."""
    await create_answers(stack, WARM_UP_ANSWERS, seed=1, deals=2)
    verdict = await settle_portals(stack, config, installed, timeout_s=90)
    if not verdict.ok:
        raise ChaosError(
            f"the warm-up did not come through cleanly: {verdict.line()} {verdict.details}"
        )


async def fault_mid_run_portals(
    stack: Stack,
    config: PortalConfig,
    installed: Sequence[Installed],
    faults: Sequence[str],
    *,
    answers: int,
    hold_s: float,
    timeout_s: float,
    gap_s: float = 1.0,
    say: Callable[[str], None] = lambda _text: None,
    progress: Callable[[PortalsVerdict], Awaitable[None] | None] | None = None,
) -> PortalsVerdict:
    """`answers` created in each portal while each fault in turn is injected and recovered
    from (`chaos.fault_mid_run`); then the portals' verdict once the pipeline settled."""
    flows = [create_answers(stack, answers, deals=answers // 4)]
    await faults_while(stack, faults, flows, hold_s=hold_s, gap_s=gap_s, say=say)
    say(f"settling (at most {timeout_s:g} s) …")
    verdict = await settle_portals(stack, config, installed, timeout_s=timeout_s, progress=progress)
    await all_ready(stack)
    return verdict
