"""The pipeline's verdict: what the portal produced compared with what it finally holds.

Counts, for one portal (sandbox inspection + the pipeline's own records):
- `lost`: survey items and answered NPS deals never scored, actions the answers call for with no
  outcome (no lead, no task, no contact outcome), NPS deals not at the stage their answer calls
  for;
- `duplicated`: leads or tasks created more than once for one action or answer, an NPS deal
  moved more than once for one answer or given a task it should not have;
- `overwritten`: contact field values b24-nps replaced although it had not written them, and
  multiple (history) fields that lost an entry;
- `dlq`: messages waiting in dead-letter queues.
The expectations come from the scored answers with rules restated here on purpose, so a
routing bug shows up as `lost` or `duplicated` instead of agreeing with itself.

When the stack runs dispatch (a `DispatchWatch` is given), its sales, requests, NPS deals and
e-mails are judged too (`dispatch_check.py`): `requests` and `messages` count the register's
requests and the inbox's messages, their problems add to `lost` and `duplicated`, and `resent`
counts the messages sent twice in the one case dispatch documents (accepted by the SMTP server,
the process gone before its record), apart from `duplicated` and never hidden.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import httpx

from services.crm_sync import read as crm_sync_read
from services.crm_sync.read import ActionView, WriteView
from services.dispatch import read as dispatch_read
from services.harness.dispatch_check import DispatchFacts, Incident, Sale, judge
from services.scoring.read import CurrentAnswer, current_answers, scored_items
from shared.deal_stages import read_funnel, status_entity_id
from shared.events import Category
from shared.portal_config import DealSurvey, EquipmentSegment, PortalConfig

CONTACT_OUTCOMES = {"patched", "unchanged", "conflict", "skipped"}


@dataclass
class Verdict:
    portal: str = ""
    items: int = 0
    deals: int = 0
    """Answered NPS deals of the deal surveys' funnels."""
    answers: int = 0
    leads: int = 0
    tasks: int = 0
    patches: int = 0
    """Contact fields b24-nps wrote (its write records)."""
    requests: int = 0
    """Dispatch's survey requests (0 when the stack does not run dispatch)."""
    messages: int = 0
    """Survey e-mails in the sandbox's inbox."""
    register: dict[str, int] = field(default_factory=dict)
    """Dispatch's requests per state."""
    lost: int = 0
    duplicated: int = 0
    resent: int = 0
    """E-mails sent twice because the SMTP server accepted one and dispatch died before its
    record (the documented exception, docs/dispatch.md), each explained by a fault."""
    overwritten: int = 0
    dlq: int = 0
    details: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, text: str) -> None:
        self.details.setdefault(kind, []).append(text)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.overwritten == 0

    def line(self) -> str:
        return (
            f"items {self.items} · deals {self.deals} · answers {self.answers} · "
            f"requests {self.requests} · messages {self.messages} · "
            f"lost {self.lost} · duplicated {self.duplicated} · resent {self.resent} · "
            f"overwritten {self.overwritten} · dlq {self.dlq}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plain(value: Any) -> Any:
    """Compare values the way the portal stores them: scalars as text, lists element-wise."""
    if isinstance(value, str) and value.startswith(("[", "{", '"')):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or value == "" or value is False:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@dataclass
class DispatchWatch:
    """Judge dispatch as well: the faults injected so far that may explain a message sent twice,
    and what the checks keep between two looks (a won sale's products and a contact's address
    do not change during a run)."""

    incidents: list[Incident] = field(default_factory=list)
    products: dict[int, tuple[int, ...]] = field(default_factory=dict)
    emails: dict[int, str | None] = field(default_factory=dict)


async def compute(
    sandbox_url: str,
    pool: asyncpg.Pool,
    config: PortalConfig,
    dlq: int = 0,
    watch: DispatchWatch | None = None,
) -> Verdict:
    verdict = Verdict(dlq=dlq)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as http:
        info = (await http.get("/sandbox/info")).raise_for_status().json()
        portal = str(info["member_id"])
        verdict.portal = portal
        entity_type = config.survey.entity_type_id
        items = (await http.get("/sandbox/items", params={"entity_type_id": entity_type})).json()
        leads = (await http.get("/sandbox/leads")).json()["leads"]
        tasks = (await http.get("/sandbox/tasks")).json()["tasks"]
        item_ids = [int(item["id"]) for item in items["items"]]
        verdict.items = len(item_ids)
        deals = await _nps_deals(http, str(info["webhook_url"]), config)
        async with pool.acquire() as conn:
            scored = await scored_items(conn, portal)
            answers = await current_answers(conn, portal)
            actions = await crm_sync_read.actions(conn, portal)
            ours = await crm_sync_read.portal_writes(conn, portal)
        contacts = sorted({w.contact_id for w in ours} | _touched(leads))
        histories = {
            cid: (await http.get(f"/sandbox/contacts/{cid}/history")).json()["changes"]
            for cid in contacts
        }
    verdict.answers = len(answers)
    verdict.leads, verdict.tasks, verdict.patches = len(leads), len(tasks), len(ours)
    for item_id in item_ids:
        if (entity_type, item_id) not in scored:
            verdict.lost += 1
            verdict.note("lost", f"item {item_id} never scored")
    _check_deals(verdict, deals, scored, tasks, config)
    _check_creates(verdict, answers, actions, leads, tasks)
    _check_contacts(verdict, answers, actions, config)
    _check_overwrites(verdict, histories, ours, config)
    if watch is not None:
        await _check_dispatch(verdict, sandbox_url, pool, config, watch)
    return verdict


async def _check_dispatch(
    verdict: Verdict,
    sandbox_url: str,
    pool: asyncpg.Pool,
    config: PortalConfig,
    watch: DispatchWatch,
) -> None:
    """The inbox first, then the register: a message recorded by the time the register is read
    was in the inbox already (it is recorded after the SMTP server accepted it)."""
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as http:
        inbox = (await http.get("/inbox.json")).raise_for_status().json()
        info = (await http.get("/sandbox/info")).raise_for_status().json()
        sales = await _won_sales(http, config, watch)
        nps_deals = await _nps_deals_by_origin(http, config)
        async with pool.acquire() as conn:
            requests = await dispatch_read.requests(
                conn, dispatch_read.RegisterFilter(portal=verdict.portal, limit=1_000_000)
            )
        contacts = {int(row["contact_id"]) for row in requests} - set(watch.emails) - {0}
        watch.emails.update(await _emails(http, str(info["webhook_url"]), sorted(contacts)))
    messages = inbox["messages"]
    found = judge(
        DispatchFacts(
            requests=requests,
            messages=messages,
            evicted=int(inbox["received"]) - len(messages),
            sales=sales,
            nps_deals=nps_deals,
            emails=watch.emails,
            incidents=watch.incidents,
        ),
        config,
    )
    verdict.requests, verdict.messages = found.requests, found.messages
    verdict.register = found.states
    verdict.lost += len(found.lost)
    verdict.duplicated += len(found.duplicated)
    verdict.resent += len(found.resent)
    for kind, notes in (
        ("lost", found.lost),
        ("duplicated", found.duplicated),
        ("resent", found.resent),
    ):
        for note in notes:
            verdict.note(kind, note)


async def _won_sales(
    http: httpx.AsyncClient, config: PortalConfig, watch: DispatchWatch
) -> list[Sale]:
    """The won deals of the funnels `dispatch.sales` watches, with their products (read once)."""
    funnels = [] if config.dispatch is None else [t.funnel for t in config.dispatch.sales]
    sales = []
    for funnel in funnels:
        listed = (await http.get("/sandbox/deals", params={"category_id": funnel})).json()
        for deal in listed["deals"]:
            if deal.get("STAGE_SEMANTIC_ID") != "S":
                continue
            deal_id = int(deal["ID"])
            if deal_id not in watch.products:
                details = (await http.get(f"/sandbox/deals/{deal_id}")).raise_for_status().json()
                watch.products[deal_id] = tuple(
                    int(row["productId"]) for row in details.get("product_rows") or []
                )
            sales.append(Sale(deal_id, funnel, watch.products[deal_id]))
    return sales


async def _nps_deals_by_origin(
    http: httpx.AsyncClient, config: PortalConfig
) -> dict[str, list[int]]:
    """The deals b24-nps created in the deal surveys' funnels, by `originId` (the request)."""
    found: dict[str, list[int]] = {}
    for category in sorted({survey.category_id for survey in config.deal_surveys}):
        listed = (await http.get("/sandbox/deals", params={"category_id": category})).json()
        for deal in listed["deals"]:
            if deal.get("ORIGINATOR_ID") == "b24-nps" and deal.get("ORIGIN_ID"):
                found.setdefault(str(deal["ORIGIN_ID"]), []).append(int(deal["ID"]))
    return found


async def _emails(
    http: httpx.AsyncClient, webhook_url: str, contacts: list[int]
) -> dict[int, str | None]:
    """Each contact's first e-mail address, 50 contacts per `batch` request."""
    emails: dict[int, str | None] = {}
    for first in range(0, len(contacts), 50):
        chunk = contacts[first : first + 50]
        cmd = {f"c{contact}": f"crm.contact.get?id={contact}" for contact in chunk}
        reply = await http.post(f"{webhook_url}batch.json", json={"halt": 0, "cmd": cmd})
        results = reply.raise_for_status().json()["result"]["result"]
        for contact in chunk:
            record = results.get(f"c{contact}") if isinstance(results, dict) else None
            addresses = (record or {}).get("EMAIL") or []
            emails[contact] = next(
                (str(e["VALUE"]) for e in addresses if isinstance(e, dict) and e.get("VALUE")),
                None,
            )
    return emails


@dataclass(frozen=True)
class _NpsDeal:
    deal: dict[str, Any]
    survey: DealSurvey
    stages: dict[str, str]
    """The funnel's success and failure stage ids (`crm.status.list` semantics)."""


async def _nps_deals(
    http: httpx.AsyncClient, webhook_url: str, config: PortalConfig
) -> list[_NpsDeal]:
    """The answered deals of each deal survey's funnel, with the funnel's final stages."""
    found: list[_NpsDeal] = []
    for survey in config.deal_surveys:
        rows = (
            await http.post(
                f"{webhook_url}crm.status.list.json",
                json={"filter": {"ENTITY_ID": status_entity_id(survey.category_id)}},
            )
        ).json()["result"]
        funnel = read_funnel(survey.category_id, rows)
        stages = {
            outcome: stage.id
            for outcome, stage in (("success", funnel.success), ("failure", funnel.failure))
            if stage is not None
        }
        listed = (
            await http.get("/sandbox/deals", params={"category_id": survey.category_id})
        ).json()["deals"]
        found.extend(
            _NpsDeal(deal, survey, stages)
            for deal in listed
            if deal.get(survey.score_field) not in (None, "")
        )
    return found


def _category(score: int, scale: str) -> Category:
    """The NPS category of a score, restated: binary 1 promotes; 9-10, 7-8, the rest detract."""
    if scale == "binary":
        return "promoter" if score == 1 else "detractor"
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def _check_deals(
    verdict: Verdict,
    deals: list[_NpsDeal],
    scored: set[tuple[int, int]],
    tasks: list[dict[str, Any]],
    config: PortalConfig,
) -> None:
    """Each answered NPS deal: scored, at the stage its answer calls for, moved once, and one
    head-of-sales task when it is a detractor (none otherwise)."""
    verdict.deals = len(deals)
    bound = Counter(
        str(binding) for task in tasks for binding in task.get("UF_CRM_TASK") or [] if binding
    )
    for nps in deals:
        deal_id = int(nps.deal["ID"])
        if (2, deal_id) not in scored:
            verdict.lost += 1
            verdict.note("lost", f"NPS deal {deal_id} never scored")
            continue
        category = _category(
            int(nps.deal[nps.survey.score_field]), nps.survey.scale or config.nps.scale
        )
        outcome = nps.survey.stages.outcome(category)
        moves = len(nps.deal["stage_moves"])
        if outcome != "leave" and nps.deal["STAGE_ID"] != nps.stages.get(outcome):
            verdict.lost += 1
            verdict.note("lost", f"NPS deal {deal_id} at {nps.deal['STAGE_ID']}, not {outcome}")
        allowed = 0 if outcome == "leave" else 1
        if moves > allowed:
            verdict.duplicated += moves - allowed
            verdict.note("duplicated", f"NPS deal {deal_id} moved {moves} times")
        wanted = int(category == "detractor" and config.routing.task is not None)
        count = bound[f"D_{deal_id}"]
        if count < wanted:
            verdict.lost += 1
            verdict.note("lost", f"no task for NPS deal {deal_id}")
        elif count > wanted:
            verdict.duplicated += count - wanted
            verdict.note("duplicated", f"{count} tasks for NPS deal {deal_id}")


def _touched(leads: list[dict[str, Any]]) -> set[int]:
    return {int(lead["CONTACT_ID"]) for lead in leads if lead.get("CONTACT_ID")}


def _check_creates(
    verdict: Verdict,
    answers: list[CurrentAnswer],
    actions: list[ActionView],
    leads: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
) -> None:
    action_answer = {r.action_id: (r.answer_id, r.action) for r in actions}
    lead_origins = Counter(str(lead.get("ORIGIN_ID")) for lead in leads if lead.get("ORIGIN_ID"))
    task_origins = Counter(str(task.get("XML_ID")) for task in tasks if task.get("XML_ID"))
    for origin, count in (lead_origins + task_origins).items():
        if count > 1:
            verdict.duplicated += count - 1
            verdict.note("duplicated", f"{count} entities for action {origin}")
    created: Counter[tuple[str, str]] = Counter()
    for origin in (*lead_origins, *task_origins):
        if origin in action_answer:
            created[action_answer[origin]] += 1
    for row in answers:
        if row.kind != "equipment":
            continue
        wanted = []
        if row.category == "detractor" or row.service_request:
            wanted.append("service")
        if row.category == "promoter":
            wanted.append("marketing")
        if row.category == "detractor":
            wanted.append("task")
        for action in wanted:
            count = created[(row.answer_id, action)]
            if count == 0:
                verdict.lost += 1
                verdict.note("lost", f"no {action} for answer {row.answer_id}")
            elif count > 1:
                verdict.duplicated += count - 1
                verdict.note("duplicated", f"{count} x {action} for answer {row.answer_id}")


def _check_contacts(
    verdict: Verdict,
    answers: list[CurrentAnswer],
    actions: list[ActionView],
    config: PortalConfig,
) -> None:
    done = {
        r.answer_id
        for r in actions
        if r.action == "contact" and r.state == "done" and r.outcome in CONTACT_OUTCOMES
    }
    for row in answers:
        segment = config.survey.segment(row.category_id)
        mapped = isinstance(segment, EquipmentSegment) and segment.contact_fields is not None
        wanted = row.kind == "equipment" and row.contact_id and mapped
        if wanted and row.answer_id not in done:
            verdict.lost += 1
            verdict.note("lost", f"no contact outcome for answer {row.answer_id}")


def _check_overwrites(
    verdict: Verdict,
    histories: dict[int, list[dict[str, Any]]],
    ours: list[WriteView],
    config: PortalConfig,
) -> None:
    owned: dict[tuple[int, str], list[Any]] = {}
    for row in ours:
        owned.setdefault((row.contact_id, row.field), []).append(_plain(row.after))
    single: set[str] = set()
    multiple: set[str] = set()
    for segment in config.survey.segments:
        if isinstance(segment, EquipmentSegment) and segment.contact_fields is not None:
            fields = segment.contact_fields
            single.update(f for f in (fields.score, fields.date) if f)
            if fields.history:
                multiple.add(fields.history)
    for contact_id, changes in histories.items():
        for change in changes:
            if change["method"] in {"seed", "sandbox.answers"}:
                continue
            name, before, after = change["field"], _plain(change["before"]), _plain(change["after"])
            if name in single and before != "" and before not in owned.get((contact_id, name), []):
                verdict.overwritten += 1
                verdict.note("overwritten", f"contact {contact_id} {name}: {before!r} → {after!r}")
            if name in multiple and isinstance(before, list):
                kept = after if isinstance(after, list) else [after]
                if any(value not in kept for value in before):
                    verdict.overwritten += 1
                    verdict.note("overwritten", f"contact {contact_id} {name} lost entries")
