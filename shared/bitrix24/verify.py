"""`nps config check --portal`: does every field the portal YAML names exist, with a fitting type?

The NPS smart process's fields come from `crm.item.fields` (with `useOriginalUfNames=Y`, the
names the YAML uses); the contact's from `crm.contact.fields` and `crm.contact.userfield.list`
(the latter gives user fields' exact `USER_TYPE_ID` and `MULTIPLE`). What fits:

- survey score fields: numeric (`integer`, `double`) or an enumeration (list) field;
- "tested" flags and the service-request flag: `boolean`;
- contact score fields: numeric, enumeration, or `string` (legacy fields kept by hand as text);
  single-valued;
- contact date fields: `date`, `datetime` or `string`; single-valued;
- contact history fields: a multiple `string` field (it is appended to, never rewritten);
- the contact, responsible and comment fields of the item: present.

Deal surveys (`deal_surveys`): the deal fields come from `crm.item.fields` with `entityTypeId` 2
(score: numeric, enumeration or string; comment and sales-deal link: present), and each NPS deal
category's stages from `crm.status.list` (`ENTITY_ID` `DEAL_STAGE` or `DEAL_STAGE_<id>`): the
category must exist and have a success (`SEMANTICS` S) and a failure (F) stage, which are shown.

It also lists the smart process's categories (`crm.category.list`) that no segment maps: their
answers are held by ingest until a segment does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.bitrix24.budget import MemoryRateBudget
from shared.bitrix24.client import Bitrix24Client, Command
from shared.bitrix24.errors import Bitrix24Error
from shared.deal_stages import Funnel, funnel_problems, read_funnel, status_entity_id
from shared.portal_config import CosmeticsSegment, PortalConfig
from shared.settings import Settings

NUMERIC = frozenset({"integer", "double"})
SCORE_TYPES = NUMERIC | {"enumeration"}
CONTACT_SCORE_TYPES = SCORE_TYPES | {"string"}
DATE_TYPES = frozenset({"date", "datetime", "string"})
FLAG_TYPES = frozenset({"boolean"})
HISTORY_TYPES = frozenset({"string"})
DEAL_SCORE_TYPES = SCORE_TYPES | {"string"}
LINK_TYPES = frozenset({"string", "url"})
"""A link field: a string (or URL) deal field holds the personal survey link."""
DEAL_TYPE_ID = 2


@dataclass(frozen=True)
class FieldInfo:
    type: str
    multiple: bool


@dataclass(frozen=True)
class PortalCategory:
    """A category of the smart process as `crm.category.list` lists it."""

    category_id: int
    name: str


@dataclass(frozen=True)
class PortalCheck:
    problems: list[str]
    """One line per problem; empty when every configured field fits."""
    unmapped: list[PortalCategory]
    """The smart process's categories that no segment maps."""
    funnels: list[Funnel] = field(default_factory=list)
    """The NPS deal funnels of `deal_surveys`, as the portal lists their stages."""


def portal_categories(result: Any) -> list[PortalCategory]:
    """Read `crm.category.list`'s result (`{"categories": [{"id": 16, "name": ...}, ...]}`)."""
    categories = result.get("categories") if isinstance(result, Mapping) else None
    listed = []
    for entry in categories if isinstance(categories, list) else []:
        category_id = entry.get("id") if isinstance(entry, Mapping) else None
        if isinstance(category_id, int | str) and str(category_id).isdigit():
            listed.append(PortalCategory(int(category_id), str(entry.get("name") or "")))
    return listed


def unmapped_categories(
    categories: Sequence[PortalCategory], config: PortalConfig
) -> list[PortalCategory]:
    """The categories no segment of `config` maps, in the portal's order."""
    return [c for c in categories if config.survey.segment(c.category_id) is None]


@dataclass(frozen=True)
class _Rule:
    path: str
    name: str
    types: frozenset[str] | None = None
    multiple: bool | None = None
    wanted: str = ""


def item_fields(result: Any) -> dict[str, FieldInfo]:
    """`crm.item.fields`' `result`, by the field's name and, for user fields, its UPPER name."""
    fields = result.get("fields") if isinstance(result, Mapping) else None
    found: dict[str, FieldInfo] = {}
    for name, spec in (fields or {}).items():
        if not isinstance(spec, Mapping):
            continue
        info = FieldInfo(str(spec.get("type") or ""), bool(spec.get("isMultiple")))
        found[str(name)] = info
        upper = spec.get("upperName")
        if isinstance(upper, str) and upper.startswith("UF_"):
            found.setdefault(upper, info)
    return found


def contact_fields(fields_result: Any, userfields_result: Any) -> dict[str, FieldInfo]:
    """`crm.contact.fields` merged with `crm.contact.userfield.list` (which wins for UFs)."""
    found: dict[str, FieldInfo] = {}
    if isinstance(fields_result, Mapping):
        for name, spec in fields_result.items():
            if isinstance(spec, Mapping):
                found[str(name)] = FieldInfo(
                    str(spec.get("type") or ""), bool(spec.get("isMultiple"))
                )
    for entry in userfields_result if isinstance(userfields_result, list) else []:
        if isinstance(entry, Mapping) and entry.get("FIELD_NAME"):
            found[str(entry["FIELD_NAME"])] = FieldInfo(
                str(entry.get("USER_TYPE_ID") or ""), str(entry.get("MULTIPLE")).upper() == "Y"
            )
    return found


def _item_rules(config: PortalConfig) -> list[_Rule]:
    survey = config.survey
    rules = [
        _Rule("survey.fields.contact", survey.fields.contact),
        _Rule("survey.fields.responsible", survey.fields.responsible),
    ]
    if survey.fields.comment:
        rules.append(_Rule("survey.fields.comment", survey.fields.comment))
    if survey.fields.service_request:
        rules.append(
            _Rule(
                "survey.fields.service_request",
                survey.fields.service_request,
                FLAG_TYPES,
                wanted="a boolean field",
            )
        )
    score = "a numeric (integer, double) or enumeration field"
    for index, segment in enumerate(survey.segments):
        where = f"survey.segments[{index}]"
        if isinstance(segment, CosmeticsSegment):
            for number, product in enumerate(segment.products):
                at = f"{where}.products[{number}]"
                rules.append(
                    _Rule(
                        f"{at}.tested_field",
                        product.tested_field,
                        FLAG_TYPES,
                        wanted="a boolean field",
                    )
                )
                rules.append(
                    _Rule(f"{at}.score_field", product.score_field, SCORE_TYPES, wanted=score)
                )
        else:
            rules.append(
                _Rule(f"{where}.score_field", segment.score_field, SCORE_TYPES, wanted=score)
            )
    return rules


def _contact_rules(config: PortalConfig) -> list[_Rule]:
    rules: list[_Rule] = []
    for index, segment in enumerate(config.survey.segments):
        if isinstance(segment, CosmeticsSegment) or segment.contact_fields is None:
            continue
        owned = segment.contact_fields
        where = f"survey.segments[{index}].contact_fields"
        rules.append(
            _Rule(
                f"{where}.score",
                owned.score,
                CONTACT_SCORE_TYPES,
                multiple=False,
                wanted="a single numeric, enumeration or string field",
            )
        )
        if owned.date:
            rules.append(
                _Rule(
                    f"{where}.date",
                    owned.date,
                    DATE_TYPES,
                    multiple=False,
                    wanted="a single date, datetime or string field",
                )
            )
        if owned.history:
            rules.append(
                _Rule(
                    f"{where}.history",
                    owned.history,
                    HISTORY_TYPES,
                    multiple=True,
                    wanted="a multiple string field",
                )
            )
    return rules


def _deal_rules(config: PortalConfig) -> list[_Rule]:
    rules: list[_Rule] = []
    for index, deal in enumerate(config.deal_surveys):
        where = f"deal_surveys[{index}]"
        rules.append(
            _Rule(
                f"{where}.score_field",
                deal.score_field,
                DEAL_SCORE_TYPES,
                wanted="a numeric (integer, double), enumeration or string field",
            )
        )
        if deal.comment_field:
            rules.append(_Rule(f"{where}.comment_field", deal.comment_field))
        if deal.sale_deal_field:
            rules.append(_Rule(f"{where}.sale_deal_field", deal.sale_deal_field))
    channel = None if config.dispatch is None else config.dispatch.portal_channel
    if channel is not None:
        rules.append(
            _Rule(
                "dispatch.portal_channel.link_field",
                channel.link_field,
                LINK_TYPES,
                wanted="a string (or URL) field for the survey link",
            )
        )
    return rules


def _deal_categories(config: PortalConfig) -> list[int]:
    """The deal categories whose stages the check reads: the deal surveys' NPS funnels and the
    sales funnels dispatch watches."""
    sales = [] if config.dispatch is None else [t.funnel for t in config.dispatch.sales]
    return list(dict.fromkeys([d.category_id for d in config.deal_surveys] + sales))


def _reads_deals(config: PortalConfig) -> bool:
    return bool(config.deal_surveys) or (
        config.dispatch is not None
        and (bool(config.dispatch.sales) or config.dispatch.portal_channel is not None)
    )


def check_deal_fields(config: PortalConfig, deal: Mapping[str, FieldInfo]) -> list[str]:
    """The deal surveys' fields against `crm.item.fields` of deals (entityTypeId 2)."""
    return _check(_deal_rules(config), deal, "the deal fields (crm.item.fields, entityTypeId 2)")


def check_funnels(
    config: PortalConfig, statuses: Mapping[int, Any]
) -> tuple[list[str], list[Funnel]]:
    """Each deal survey's category against its `crm.status.list` rows (by category id), and
    each sales funnel dispatch watches: it exists and has a success stage."""
    problems: list[str] = []
    funnels = []
    for index, deal in enumerate(config.deal_surveys):
        rows = statuses.get(deal.category_id)
        funnel = read_funnel(deal.category_id, rows if isinstance(rows, list) else [])
        problems.extend(funnel_problems(funnel, f"deal_surveys[{index}].category_id"))
        funnels.append(funnel)
    sales = () if config.dispatch is None else config.dispatch.sales
    for index, trigger in enumerate(sales):
        rows = statuses.get(trigger.funnel)
        funnel = read_funnel(trigger.funnel, rows if isinstance(rows, list) else [])
        where = f"dispatch.sales[{index}].funnel"
        if not funnel.stages:
            problems.append(f"{where}: deal category {trigger.funnel} does not exist (no stages)")
        elif funnel.first("success") is None:
            problems.append(
                f"{where}: deal category {trigger.funnel} has no success stage (SEMANTICS S):"
                " no sale there can close"
            )
    return problems, funnels


def _check(rules: Sequence[_Rule], fields: Mapping[str, FieldInfo], source: str) -> list[str]:
    problems: list[str] = []
    for rule in rules:
        info = fields.get(rule.name)
        if info is None:
            problems.append(f"{rule.path}: {rule.name} does not exist in {source}")
            continue
        kind = f"{'multiple ' if info.multiple else ''}{info.type or 'untyped'}"
        article = "an" if kind[0] in "aeiou" else "a"
        type_ok = rule.types is None or info.type.lower() in rule.types
        multiple_ok = rule.multiple is None or info.multiple == rule.multiple
        if not (type_ok and multiple_ok):
            problems.append(
                f"{rule.path}: {rule.name} is {article} {kind} field; expected {rule.wanted}"
            )
    return problems


def check_fields(
    config: PortalConfig,
    item: Mapping[str, FieldInfo],
    contact: Mapping[str, FieldInfo],
) -> list[str]:
    """One line per problem (path in the YAML, field, what is wrong); empty when all fit."""
    etype = config.survey.entity_type_id
    return [
        *_check(_item_rules(config), item, f"crm.item.fields of smart process {etype}"),
        *_check(_contact_rules(config), contact, "the contact fields"),
    ]


async def verify_portal(client: Bitrix24Client, config: PortalConfig) -> PortalCheck:
    """Read the field lists and the categories from the portal (one batch) and check the YAML
    against them.

    Raises `Bitrix24Error` when the portal cannot be asked at all (unreachable, bad webhook).
    """
    etype = config.survey.entity_type_id
    deals: list[Command] = []
    if _reads_deals(config):
        deals.append(
            Command(
                "deal",
                "crm.item.fields",
                {"entityTypeId": DEAL_TYPE_ID, "useOriginalUfNames": "Y"},
            )
        )
        deals.extend(
            Command(
                f"stages_{category}",
                "crm.status.list",
                {"filter": {"ENTITY_ID": status_entity_id(category)}},
            )
            for category in _deal_categories(config)
        )
    batch = await client.batch(
        [
            Command("item", "crm.item.fields", {"entityTypeId": etype, "useOriginalUfNames": "Y"}),
            Command("contact", "crm.contact.fields"),
            Command("userfields", "crm.contact.userfield.list"),
            Command("categories", "crm.category.list", {"entityTypeId": etype}),
            *deals,
        ]
    )
    for error in batch.errors.values():
        if error.method == "batch":  # the request itself failed: the portal was not asked
            raise error
    if batch.errors:
        errors = dict(batch.errors)
        if "item" in errors:  # no such smart process: its categories cannot be listed either
            errors.pop("categories", None)
        return PortalCheck([_unreadable(name, etype, error) for name, error in errors.items()], [])
    problems = check_fields(
        config,
        item_fields(batch.results.get("item")),
        contact_fields(batch.results.get("contact"), batch.results.get("userfields")),
    )
    funnels: list[Funnel] = []
    if _reads_deals(config):
        problems.extend(check_deal_fields(config, item_fields(batch.results.get("deal"))))
        statuses = {c: batch.results.get(f"stages_{c}") for c in _deal_categories(config)}
        funnel_lines, funnels = check_funnels(config, statuses)
        problems.extend(funnel_lines)
    categories = portal_categories(batch.results.get("categories"))
    return PortalCheck(problems, unmapped_categories(categories, config), funnels)


def _unreadable(name: str, etype: int, error: Bitrix24Error) -> str:
    if name.startswith("stages_"):
        what = f"deal funnels: cannot list the stages of deal category {name[7:]}"
        return f"{what} ({error.code or 'no code'}: {error.description})"
    what = {
        "deal": "deal_surveys: cannot read the deal fields (crm.item.fields, entityTypeId 2)",
        "item": f"survey.entity_type_id: cannot read the fields of smart process {etype}",
        "contact": "contact fields: cannot read crm.contact.fields",
        "userfields": "contact fields: cannot read crm.contact.userfield.list",
        "categories": f"survey.segments: cannot list the categories of smart process {etype}",
    }[name]
    return f"{what} ({error.code or 'no code'}: {error.description})"


async def check_configured_portal(
    settings: Settings,
    config: PortalConfig,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PortalCheck:
    """`verify_portal` on the configured portal (or the sandbox); a portal that cannot be asked
    is one problem line, with a hint when it is the local sandbox."""
    budget = MemoryRateBudget(config.portal.effective_rate())
    base_url = settings.portal_webhook_url()
    async with Bitrix24Client(base_url, budget, transport=transport, max_attempts=2) as client:
        try:
            return await verify_portal(client, config)
        except Bitrix24Error as exc:
            hint = " (is the sandbox running? `nps sandbox`)" if settings.sandbox else ""
            return PortalCheck([f"portal: cannot read the field lists: {exc}{hint}"], [])
