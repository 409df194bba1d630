"""The demo portal: the NPS smart process from the portal YAML, contacts that already hold
years of hand-kept values, the responsible users, and survey answers as CRM forms create them."""

import random
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from services.sandbox.crm import Crm
from services.sandbox.methods import CONTACT
from services.sandbox.people import FIRST_NAMES, LAST_NAMES, MANAGERS
from services.sandbox.portal import SandboxPortal
from services.sandbox.sales import SalesError, seed_sales
from services.sandbox.schema import (
    DEAL,
    Category,
    EntityType,
    EnumItem,
    deal_funnel,
    field,
    smart_process_type,
)
from services.sandbox.state import DealSurveyLayout, ProductLayout, SegmentLayout, SurveyLayout
from services.sandbox.values import FieldValueError

DEMO_CONFIG = Path("config/portal.example.yaml")
DAY = 86_400.0
_TYPED_UF = re.compile(r"^UF_CRM_(\d+)_")

ROUTING_USERS = {
    "task": ("Olga", "Kuznetsova", "Head of sales"),
    "service": ("Sergey", "Fedorov", "Head of service department"),
    "marketing": ("Natalia", "Orlova", "Marketing manager"),
}
SCORE_WEIGHTS = (4, 1, 1, 2, 2, 3, 5, 9, 12, 16, 18)
COMMENTS = {
    "detractor": (
        "The device broke after two weeks.",
        "Service took far too long to answer.",
        "Не работает охлаждение, ждём мастера.",  # noqa: RUF001 - Russian text on purpose
        "Expected better results for the price.",
    ),
    "passive": ("Good, but the manual is confusing.", "Нормально.", "OK overall."),
    "promoter": (
        "Excellent results, my clients love it!",
        "Отличный аппарат!",
        "Will recommend it to colleagues.",
    ),
}
LEGACY_SCORES = ("{s}", "{s}/10", "{s} (звонок)", "оценка {s}", "{s} - see notes")
HISTORY_CHANNELS = ("phone survey", "exhibition", "manual entry", "звонок менеджера")


class ConfigError(ValueError):
    """The portal YAML lacks something the demo portal needs; the message names the key."""


def seed_demo(
    portal: SandboxPortal,
    config_path: str | Path = DEMO_CONFIG,
    contacts: int = 300,
    seed: int = 42,
    sales: int = 12,
) -> SurveyLayout:
    """Build the demo portal described by the portal YAML.

    The NPS smart process gets the YAML's categories and item fields. Equipment score fields
    alternate by equipment segment: the first is ``integer``, the second an ``enumeration``
    whose list items (IDs 2001.., 2101.., ...) read "0".."10", and so on. Contact fields
    alternate the same way: score ``string``/``double``, date ``date``/``datetime``; history
    fields are multiple strings. About 40% of the contacts hold legacy values in them; about
    80% have an e-mail address (``@example.com``). Then the sales: the product catalog and
    ``sales`` open sales deals with product rows (:func:`services.sandbox.sales.seed_sales`).
    """
    path = Path(config_path)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    rng = random.Random(seed)  # noqa: S311 - demo data, not crypto
    crm = portal.crm
    _seed_users(crm, config)
    layout = _seed_smart_process(crm, config)
    _seed_contact_fields(crm, layout)
    crm.state.deal_surveys = _seed_deal_funnels(crm, config)
    now = portal.clock()
    for _ in range(contacts):
        values = _contact_values(rng, layout, crm.state.entity_types[CONTACT])
        crm.add(CONTACT, values, method="seed", created_at=now - rng.uniform(30, 2000) * DAY)
    crm.state.survey = layout
    sku_names = {p.sku: p.name for segment in layout.segments for p in segment.products}
    try:
        seed_sales(portal, config, sku_names=sku_names, count=sales, seed=seed)
    except SalesError as exc:
        raise ConfigError(str(exc)) from exc
    return layout


def make_answers(
    portal: SandboxPortal, count: int, seed: int | None = None, *, spread_days: float = 0.0
) -> list[int]:
    """Create ``count`` NPS items as the CRM forms would (each fires the ADD event): random
    realistic scores including 0, cosmetics products tested but not scored, the service
    checkbox mostly on low equipment scores. ``spread_days`` back-dates their creation."""
    layout = _survey(portal)
    contacts = list(portal.crm.records(CONTACT).values())
    if not contacts:
        raise ConfigError("the portal has no contacts to answer surveys")
    rng = random.Random(seed)  # noqa: S311 - demo data, not crypto
    etype = portal.crm.state.entity_types[layout.entity_type_id]
    now = portal.clock()
    created = []
    for _ in range(count):
        segment = rng.choice(layout.segments)
        contact = rng.choice(contacts)
        values = _answer_values(rng, layout, etype, segment, contact)
        when = now - rng.uniform(0, spread_days * DAY) if spread_days else None
        record = portal.crm.add(
            layout.entity_type_id, values, method="sandbox.answers", created_at=when
        )
        created.append(record["ID"])
    return created


NPS_DEAL_STAGES = (
    ("NEW", "Survey sent", None),
    ("WON", "Positive answer", "S"),
    ("LOSE", "Negative answer", "F"),
    ("APOLOGY", "Refused to answer", "F"),
)


def _seed_deal_funnels(crm: Crm, config: Mapping[str, Any]) -> list[DealSurveyLayout]:
    """Each of the YAML's `deal_surveys`: its NPS deal funnel (success stage "Positive answer",
    failure stages "Negative answer" and "Refused to answer") and its deal fields."""
    etype = crm.state.entity_types[DEAL]
    layouts = []
    for survey in config.get("deal_surveys") or []:
        category_id = int(_require(survey, "category_id"))
        name = str(_require(survey, "name"))
        if etype.category(category_id) is None:
            etype.categories.append(deal_funnel(category_id, name, NPS_DEAL_STAGES))
        score = str(_require(survey, "score_field"))
        comment = survey.get("comment_field")
        sale = survey.get("sale_deal_field")
        for name_, type_, title in (
            (score, "integer", f"{name}: score"),
            (comment, "string", f"{name}: comment, wishes"),
            (sale, "integer", f"{name}: sales deal"),
        ):
            if name_ and name_ not in etype.fields:
                crm.add_user_field(DEAL, field(str(name_), type_, title))
        layouts.append(
            DealSurveyLayout(
                category_id=category_id,
                name=name,
                score_field=score,
                comment_field=str(comment) if comment else None,
                sale_deal_field=str(sale) if sale else None,
            )
        )
    crm.revision += 1
    return layouts


def open_nps_deals(portal: SandboxPortal, count: int, seed: int | None = None) -> list[int]:
    """Close ``count`` sales as won and open an NPS deal for each in the first deal survey's
    funnel, with the customer and the sale's responsible, not answered yet."""
    survey = _deal_survey(portal)
    contacts = list(portal.crm.records(CONTACT).values())
    if not contacts:
        raise ConfigError("the portal has no contacts to survey")
    rng = random.Random(seed)  # noqa: S311 - demo data, not crypto
    opened = []
    for _ in range(count):
        contact = rng.choice(contacts)
        manager = rng.choice(MANAGERS)[0]
        who = f"{contact['NAME']} {contact['LAST_NAME']}"
        sale = portal.crm.add(
            DEAL,
            {
                "TITLE": f"Sale: {who}",
                "CATEGORY_ID": 0,
                "STAGE_ID": "WON",
                "CONTACT_ID": contact["ID"],
                "ASSIGNED_BY_ID": manager,
                "OPPORTUNITY": float(rng.randint(5, 300) * 1000),
            },
            method="sandbox.deals",
        )
        values: dict[str, Any] = {
            "TITLE": f"{survey.name}: {who}",
            "CATEGORY_ID": survey.category_id,
            "CONTACT_ID": contact["ID"],
            "ASSIGNED_BY_ID": manager,
        }
        if survey.sale_deal_field:
            values[survey.sale_deal_field] = sale["ID"]
        opened.append(portal.crm.add(DEAL, values, method="sandbox.deals")["ID"])
    return opened


def answer_nps_deals(
    portal: SandboxPortal, deal_ids: Sequence[int], seed: int | None = None
) -> list[int]:
    """Fill score and comment of the NPS deals, as the customer's survey form does (each save
    fires ONCRMDEALUPDATE)."""
    survey = _deal_survey(portal)
    rng = random.Random(seed)  # noqa: S311 - demo data, not crypto
    for deal_id in deal_ids:
        score = _score(rng)
        values: dict[str, Any] = {survey.score_field: score}
        if survey.comment_field and rng.random() < 0.7:
            mood = "detractor" if score <= 6 else "passive" if score <= 8 else "promoter"
            values[survey.comment_field] = rng.choice(COMMENTS[mood])
        portal.crm.update(DEAL, deal_id, values, method="sandbox.answers")
    return list(deal_ids)


def _deal_survey(portal: SandboxPortal) -> DealSurveyLayout:
    if not portal.state.deal_surveys:
        raise ConfigError(
            "the portal has no NPS deal funnel: seed it from a portal YAML with deal_surveys"
        )
    return portal.state.deal_surveys[0]


def add_answer_items(portal: SandboxPortal, items: Sequence[Mapping[str, Any]]) -> list[int]:
    """Create NPS items from explicit field values (UPPER or camelCase names)."""
    layout = _survey(portal)
    etype = portal.crm.state.entity_types[layout.entity_type_id]
    named = []
    for item in items:
        values = {}
        for key, value in item.items():
            spec = etype.resolve(key)
            if spec is None:
                raise FieldValueError("UNKNOWN_FIELD", f'Unknown field "{key}"')
            values[spec.name] = value
        named.append(values)
    return [
        portal.crm.add(layout.entity_type_id, values, method="sandbox.answers")["ID"]
        for values in named
    ]


def _survey(portal: SandboxPortal) -> SurveyLayout:
    if portal.state.survey is None:
        raise ConfigError("the portal has no NPS survey: seed it first (--seed demo)")
    return portal.state.survey


def _require(mapping: Any, path: str) -> Any:
    node = mapping
    for key in path.split("."):
        if not isinstance(node, Mapping) or node.get(key) is None:
            raise ConfigError(f"portal YAML: '{path}' is missing")
        node = node[key]
    return node


def _seed_users(crm: Crm, config: Mapping[str, Any]) -> None:
    for user_id, name, last_name in MANAGERS:
        crm.add_user(
            user_id,
            name,
            last_name,
            email=f"{name.lower()}@sandbox.local",
            position="Sales manager",
        )
    for route, (name, last_name, position) in ROUTING_USERS.items():
        user_id = int(_require(config, f"routing.{route}.responsible_id"))
        crm.add_user(
            user_id, name, last_name, email=f"{name.lower()}@sandbox.local", position=position
        )


def _seed_smart_process(crm: Crm, config: Mapping[str, Any]) -> SurveyLayout:
    entity_type_id = int(_require(config, "survey.entity_type_id"))
    fields = _require(config, "survey.fields")
    segments = _require(config, "survey.segments")
    categories = [
        Category(
            id=int(_require(seg, "category_id")),
            name=str(seg.get("name") or seg["kind"]),
            is_default=index == 0,
        )
        for index, seg in enumerate(segments)
    ]
    etype = crm.register_type(
        smart_process_type(entity_type_id, "NPS", _uf_entity(config), categories)
    )

    def standard(key: str) -> str:
        spec = etype.resolve(str(_require(fields, key)))
        if spec is None:
            raise ConfigError(f"portal YAML: 'survey.fields.{key}' is not a standard item field")
        return spec.name

    def user_field(name: str, type_: str, title: str, **options: Any) -> str:
        if name not in etype.fields:
            crm.add_user_field(entity_type_id, field(name, type_, title, **options))
        return name

    comment = fields.get("comment")
    service = fields.get("service_request")
    layout = SurveyLayout(
        entity_type_id=entity_type_id,
        contact_field=standard("contact"),
        responsible_field=standard("responsible"),
        comment_field=user_field(comment, "string", "Comment") if comment else None,
        service_field=(
            user_field(service, "boolean", "Send my request to the service department")
            if service
            else None
        ),
        segments=[],
    )
    equipment = 0
    for index, seg in enumerate(segments):
        kind = _require(seg, "kind")
        prefix = f"survey.segments.{index}"
        if kind == "cosmetics":
            products = [
                ProductLayout(
                    sku=str(_require(p, "sku")),
                    name=str(_require(p, "name")),
                    tested_field=user_field(
                        str(_require(p, "tested_field")), "boolean", f"{p['name']}: tested"
                    ),
                    score_field=user_field(
                        str(_require(p, "score_field")), "integer", f"{p['name']}: score"
                    ),
                )
                for p in _require(seg, "products")
            ]
            contact_fields: dict[str, str] = {}
        elif kind == "equipment":
            product = _require(seg, "product")
            score_name = str(_require(seg, "score_field"))
            if equipment % 2 == 0:
                user_field(score_name, "integer", f"{product['name']}: score")
            else:
                base = 2001 + 100 * (equipment // 2)
                items = [EnumItem(id=base + s, value=str(s), sort=10 * (s + 1)) for s in range(11)]
                user_field(score_name, "enumeration", f"{product['name']}: score", items=items)
            equipment += 1
            products = [
                ProductLayout(
                    sku=str(product["sku"]), name=str(product["name"]), score_field=score_name
                )
            ]
            contact_fields = {str(k): str(v) for k, v in (seg.get("contact_fields") or {}).items()}
        else:
            raise ConfigError(f"portal YAML: '{prefix}.kind' must be cosmetics or equipment")
        layout.segments.append(
            SegmentLayout(
                category_id=int(seg["category_id"]),
                name=str(seg.get("name") or products[0].name),
                kind=kind,
                products=products,
                contact_fields=contact_fields,
            )
        )
    return layout


def _uf_entity(config: Mapping[str, Any]) -> str:
    """``CRM_<n>`` from the smart process's own user fields (``UF_CRM_<n>_...``)."""
    for text in _strings(config.get("survey")):
        match = _TYPED_UF.match(text)
        if match is not None:
            return f"CRM_{match.group(1)}"
    return "CRM_1"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _seed_contact_fields(crm: Crm, layout: SurveyLayout) -> None:
    contact = crm.state.entity_types[CONTACT]
    equipment = [segment for segment in layout.segments if segment.kind == "equipment"]
    for index, segment in enumerate(equipment):
        product = segment.products[0].name
        types = {
            "score": ("string", "double")[index % 2],
            "date": ("date", "datetime")[index % 2],
            "history": "string",
        }
        titles = {"score": f"NPS {product}", "date": f"NPS {product}: date", "history": "NPS log"}
        for role, name in segment.contact_fields.items():
            if name in contact.fields:
                continue
            if role not in types:
                raise ConfigError(f"portal YAML: unknown contact_fields role '{role}'")
            crm.add_user_field(
                CONTACT, field(name, types[role], titles[role], multiple=role == "history")
            )


def _contact_values(
    rng: random.Random, layout: SurveyLayout, contact: EntityType
) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    values: dict[str, Any] = {
        "NAME": first,
        "LAST_NAME": last,
        "ASSIGNED_BY_ID": rng.choice(MANAGERS)[0],
        "SOURCE_ID": rng.choice(("CALL", "WEB", "TRADE_SHOW")),
        "PHONE": [
            {
                "VALUE": f"+7 9{rng.randint(10, 99)} {rng.randint(100, 999)}-{rng.randint(10, 99)}"
                f"-{rng.randint(10, 99)}",
                "VALUE_TYPE": rng.choice(("WORK", "MOBILE")),
            }
        ],
    }
    if rng.random() < 0.8:
        values["EMAIL"] = [
            {
                "VALUE": f"{first}.{last}{rng.randint(1, 999)}@example.com".lower(),
                "VALUE_TYPE": "WORK",
            }
        ]
    if rng.random() < 0.4:
        values.update(_legacy_values(rng, layout, contact))
    return values


def _legacy_values(rng: random.Random, layout: SurveyLayout, contact: EntityType) -> dict[str, Any]:
    """Hand-kept values from before b24-nps: loose score texts, old dates, a log."""
    equipment = [segment for segment in layout.segments if segment.kind == "equipment"]
    chosen = [segment for segment in equipment if rng.random() < 0.7] or equipment[:1]
    values: dict[str, Any] = {}
    history: dict[str, list[str]] = {}
    for segment in chosen:
        score = rng.choices(range(11), weights=SCORE_WEIGHTS)[0]
        when = f"20{rng.randint(18, 24)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        fields = segment.contact_fields
        if "score" in fields:
            if contact.fields[fields["score"]].type == "double":
                values[fields["score"]] = score - rng.choice((0, 0, 0.5)) if score else 0
            else:
                values[fields["score"]] = rng.choice(LEGACY_SCORES).format(s=score)
        if "date" in fields:
            values[fields["date"]] = when
        if "history" in fields and rng.random() < 0.5:
            log = history.setdefault(fields["history"], [])
            log.extend(
                f"{when} {segment.products[0].name}: {rng.randint(0, 10)} "
                f"({rng.choice(HISTORY_CHANNELS)})"
                for _ in range(rng.randint(1, 3))
            )
    values.update(history)
    return values


def _answer_values(
    rng: random.Random,
    layout: SurveyLayout,
    etype: EntityType,
    segment: SegmentLayout,
    contact: Mapping[str, Any],
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "TITLE": f"{segment.name}: {contact['NAME']} {contact['LAST_NAME']}",
        "CATEGORY_ID": segment.category_id,
        "SOURCE_ID": "WEBFORM",
        "WEBFORM_ID": layout.segments.index(segment) + 1,
        layout.contact_field: contact["ID"],
        layout.responsible_field: contact["ASSIGNED_BY_ID"],
    }
    scores = []
    if segment.kind == "cosmetics":
        tested = [p for p in segment.products if rng.random() < 0.5] or [
            rng.choice(segment.products)
        ]
        for product in tested:
            if product.tested_field:
                values[product.tested_field] = True
            if rng.random() < 0.85:
                scores.append(_score(rng))
                values[product.score_field] = _stored_score(etype, product.score_field, scores[-1])
    else:
        scores.append(_score(rng))
        product = segment.products[0]
        values[product.score_field] = _stored_score(etype, product.score_field, scores[-1])
        if layout.service_field:
            values[layout.service_field] = rng.random() < (0.5 if scores[-1] <= 4 else 0.05)
    if layout.comment_field and rng.random() < 0.6:
        worst = min(scores, default=8)
        mood = "detractor" if worst <= 6 else "passive" if worst <= 8 else "promoter"
        values[layout.comment_field] = rng.choice(COMMENTS[mood])
    return values


def _score(rng: random.Random) -> int:
    return rng.choices(range(11), weights=SCORE_WEIGHTS)[0]


def _stored_score(etype: EntityType, name: str, score: int) -> int:
    spec = etype.fields[name]
    if spec.type != "enumeration":
        return score
    return next(item.id for item in spec.items if item.value == str(score))
