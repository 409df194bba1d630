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
    lost: int = 0
    duplicated: int = 0
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
            f"lost {self.lost} · duplicated {self.duplicated} · "
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


async def compute(
    sandbox_url: str, pool: asyncpg.Pool, config: PortalConfig, dlq: int = 0
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
    for item_id in item_ids:
        if (entity_type, item_id) not in scored:
            verdict.lost += 1
            verdict.note("lost", f"item {item_id} never scored")
    _check_deals(verdict, deals, scored, tasks, config)
    _check_creates(verdict, answers, actions, leads, tasks)
    _check_contacts(verdict, answers, actions, config)
    _check_overwrites(verdict, histories, ours, config)
    return verdict


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
