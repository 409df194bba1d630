"""The portal YAML: survey mapping, contact fields we own, routing, rate plan (README,
Configuration; config/portal.example.yaml).

`load_portal_config()` validates the file and raises `ConfigError` whose message names each bad
key by its dotted path and says what was expected.
"""

from __future__ import annotations

from pathlib import Path
from string import Formatter
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.deal_stages import StageOutcome
from shared.dispatch_config import Dispatch
from shared.events import Category, Kind, Scale
from shared.survey_page import SurveyPageSection

PLAN_RATES: dict[str, tuple[float, int]] = {"standard": (2.0, 50), "enterprise": (5.0, 250)}
TEMPLATE_PLACEHOLDERS: tuple[str, ...] = ("score", "sku", "product", "contact_id", "comment")
"""What a string in a routing rule's `params` may refer to: `{score}`, `{sku}`, ..."""
BUILTIN_PATCH_ACTION = "contact"
"""The contact-field patch is built in (every equipment answer); no declarative rule may send it."""
BUILTIN_STAGE_ACTION = "stage"
"""The NPS deal's stage move is built in (deal surveys' `stages`); no declarative rule sends it."""
LEAD_ACTIONS: tuple[str, ...] = ("service", "marketing")
"""Actions that create a lead: never from cosmetics answers (the customer's rule)."""
TASK_ACTION = "task"
DEFAULT_DEADLINE_HOURS = 24

Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
"""A word (or stem, or phrase) a comment may contain: matched case-insensitively, as a
substring, so a stem (`доставк`) matches all its forms."""
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]
"""A language code (`ru`, `en`): words are listed per language."""
WordLists = dict[Language, Annotated[list[Word], Field(min_length=1)]]
THEME_NAME = r"^[a-z][a-z0-9_-]*$"


def word_list(lists: WordLists) -> tuple[str, ...]:
    """The words of every language, each once, in the order given."""
    return tuple(dict.fromkeys(word for words in lists.values() for word in words))


def contains_any(comment: str | None, words: tuple[str, ...]) -> bool:
    """Whether `comment` contains any of `words` (case-insensitive substrings)."""
    if not comment:
        return False
    text = comment.casefold()
    return any(word.casefold() in text for word in words)


class ConfigError(ValueError):
    """The portal YAML is missing, unreadable or invalid; the message names every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Strict):
    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


DEFAULT_BULK_MIN_SHARE = 0.2


class PortalSection(_Strict):
    plan: Literal["standard", "enterprise", "custom"] = "standard"
    rate: Rate | None = None
    member_id: str | None = None
    timezone: str = "UTC"
    """The portal's time zone (an IANA name): the dashboard shows times in it."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected an IANA name such as Europe/Moscow or UTC"
            ) from None
        return value

    bulk_min_share: float = Field(default=DEFAULT_BULK_MIN_SHARE, gt=0, lt=1)
    """The share of the portal's requests bulk work keeps while urgent work waits (the urgent
    lane, docs/crm_sync.md)."""

    @model_validator(mode="after")
    def _rate_matches_plan(self) -> PortalSection:
        if self.plan != "custom" and self.rate is not None:
            raise ValueError("'rate' is only used with plan: custom; remove it or set plan: custom")
        return self

    def effective_rate(self) -> Rate | None:
        """The request budget to respect; None = unlimited (an on-premise portal without limits)."""
        if self.plan == "custom":
            return self.rate
        per_second, burst = PLAN_RATES[self.plan]
        return Rate(per_second=per_second, burst=burst)


class NpsSection(_Strict):
    scale: Scale = "0-10"


ManagerSource = Literal["item", "contact"]
"""Whose NPS an answer is: the item's responsible (`survey.fields.responsible`) or the responsible
of the answer's contact (the contact's `ASSIGNED_BY_ID`)."""


class SurveyFields(_Strict):
    contact: str = "contactId"
    responsible: str = "assignedById"
    comment: str | None = None
    service_request: str | None = None


class Product(_Strict):
    sku: str = Field(min_length=1)
    name: str = Field(min_length=1)


class CosmeticsProduct(Product):
    tested_field: str = Field(min_length=1)
    score_field: str = Field(min_length=1)


class ContactFields(_Strict):
    """The ONLY contact fields b24-nps may ever write for a segment."""

    score: str = Field(min_length=1)
    date: str | None = None
    history: str | None = None


class CosmeticsSegment(_Strict):
    category_id: int = Field(ge=0)
    name: str | None = None
    kind: Literal["cosmetics"]
    products: list[CosmeticsProduct] = Field(min_length=1)


class EquipmentSegment(_Strict):
    category_id: int = Field(ge=0)
    name: str | None = None
    kind: Literal["equipment"]
    product: Product
    score_field: str = Field(min_length=1)
    contact_fields: ContactFields | None = None


Segment = Annotated[CosmeticsSegment | EquipmentSegment, Field(discriminator="kind")]


class Survey(_Strict):
    entity_type_id: int = Field(ge=128, description="the NPS smart process (crm.type.list)")
    fields: SurveyFields = SurveyFields()
    manager: ManagerSource = "item"
    segments: list[Segment] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_categories(self) -> Survey:
        seen: set[int] = set()
        for segment in self.segments:
            if segment.category_id in seen:
                raise ValueError(f"category_id {segment.category_id} appears in two segments")
            seen.add(segment.category_id)
        return self

    def segment(self, category_id: int) -> CosmeticsSegment | EquipmentSegment | None:
        return next((s for s in self.segments if s.category_id == category_id), None)


class DealStages(_Strict):
    """What each NPS category does to the NPS deal's stage (`leave` = nothing)."""

    promoter: StageOutcome = "success"
    passive: StageOutcome = "success"
    detractor: StageOutcome = "failure"

    def outcome(self, category: Category) -> StageOutcome:
        outcome: StageOutcome = getattr(self, category)
        return outcome


class DealSurvey(_Strict):
    """NPS kept in a deal funnel: a deal of `category_id` per closed sale, answered by filling
    `score_field` (and `comment_field`), then moved to the funnel's success or failure stage."""

    category_id: int = Field(ge=0, description="the NPS deal category (0 = the default funnel)")
    name: str = Field(min_length=1)
    product: Product
    """The sku and name the answers are reported under."""
    score_field: str = Field(min_length=1)
    comment_field: str | None = None
    sale_deal_field: str | None = None
    """A field holding the sales deal's id: its responsible is then whose NPS the answer is."""
    scale: Scale | None = None
    """The survey's scale; None = `nps.scale`."""
    stages: DealStages = DealStages()


class ResponsibleAction(_Strict):
    responsible_id: int = Field(gt=0)


class TaskAction(ResponsibleAction):
    deadline_hours: int = Field(default=DEFAULT_DEADLINE_HOURS, gt=0)


class ScoreRange(_Strict):
    """Inclusive bounds on the score; either bound may be left out."""

    min: int | None = Field(default=None, ge=0, le=10)
    max: int | None = Field(default=None, ge=0, le=10)

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both (inclusive bounds, 0-10)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def contains(self, score: int) -> bool:
        return (self.min is None or score >= self.min) and (self.max is None or score <= self.max)


class RuleMatch(_Strict):
    """Every condition given must hold; a condition left out matches anything."""

    kind: list[Kind] | None = Field(default=None, min_length=1)
    category: list[Category] | None = Field(default=None, min_length=1)
    score: ScoreRange | None = None
    sku: list[str] | None = Field(default=None, min_length=1)
    segment: list[int] | None = Field(default=None, min_length=1)
    service_request: bool | None = None
    contains_any: str | WordLists | None = None
    """The comment contains any of these words (per language), or of the words of the theme
    of this name (`themes`)."""


def _template_problems(value: Any, path: str) -> list[str]:
    """What is wrong with the templates in a rule parameter (strings, nested in dicts and lists)."""
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _template_problems(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _template_problems(item, f"{path}[{i}]")]
    if not isinstance(value, str):
        return []
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in Formatter().parse(value)
            if name is not None
        ]
    except ValueError as exc:
        return [f"{path}: {exc} (write {{{{ and }}}} for literal braces)"]
    allowed = ", ".join(f"{{{name}}}" for name in TEMPLATE_PLACEHOLDERS)
    problems = []
    for name, spec, conversion in fields:
        if name not in TEMPLATE_PLACEHOLDERS:
            problems.append(f"{path}: unknown placeholder {{{name}}}; allowed: {allowed}")
        elif spec or conversion:
            problems.append(f"{path}: placeholder {{{name}}} takes no format spec or conversion")
    return problems


class UrgentWhen(_Strict):
    """An action that goes in the urgent lane (`route.<action>.urgent`) when `match` holds."""

    action: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_]*$")
    match: RuleMatch = RuleMatch()

    @model_validator(mode="after")
    def _not_the_contact_patch(self) -> UrgentWhen:
        if self.action == BUILTIN_PATCH_ACTION:
            raise ValueError(
                "action 'contact' cannot be urgent: contact patches stay in the bulk lane, in"
                " the order their answers arrive"
            )
        return self


DEFAULT_URGENT: tuple[UrgentWhen, ...] = (
    UrgentWhen(action="service"),
    UrgentWhen(action="task"),
    UrgentWhen(action="stage", match=RuleMatch(category=["detractor"])),
)
"""Service leads, the head of sales' tasks and detractors' stage moves overtake bulk work."""


class Rule(_Strict):
    """A declarative routing rule: when `match` holds, publish `route.<action>` with `params`.

    String parameters are templates over `TEMPLATE_PLACEHOLDERS`; `responsible_id` and
    `deadline_hours`, when given, are positive integers (they override the built-in defaults when
    `action` is service, marketing or task).
    """

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    match: RuleMatch = RuleMatch()
    action: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)
    urgent: bool | None = None
    """True/False: this rule's actions go in the urgent/bulk lane; None: `routing.urgent`
    decides."""

    @model_validator(mode="after")
    def _valid_action_and_params(self) -> Rule:
        problems: list[str] = []
        if self.action == BUILTIN_PATCH_ACTION:
            problems.append(
                "action 'contact' is the built-in contact-field patch and cannot be sent by a rule"
            )
        if self.action == BUILTIN_STAGE_ACTION:
            problems.append(
                "action 'stage' is the built-in move of an NPS deal (deal_surveys[].stages) and"
                " cannot be sent by a rule"
            )
        for key in ("responsible_id", "deadline_hours"):
            value = self.params.get(key)
            if key in self.params and (type(value) is not int or value <= 0):
                problems.append(f"params.{key} must be a positive integer, got {value!r}")
        problems.extend(_template_problems(self.params, "params"))
        if problems:
            raise ValueError(f"rule {self.name!r}: " + "; ".join(problems))
        return self


class Routing(_Strict):
    service: ResponsibleAction
    marketing: ResponsibleAction
    task: TaskAction | None = None
    """The head of sales' task for equipment and deal-survey detractors; None = no task."""
    rules: list[Rule] = Field(default_factory=list)
    urgent: list[UrgentWhen] = Field(default_factory=lambda: list(DEFAULT_URGENT))
    """Which of crm_sync's actions overtake bulk work; a rule's own `urgent` comes first."""

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Routing:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        return self


class PortalConfig(_Strict):
    portal: PortalSection = PortalSection()
    nps: NpsSection = NpsSection()
    survey: Survey
    deal_surveys: list[DealSurvey] = Field(default_factory=list)
    routing: Routing
    themes: dict[Annotated[str, StringConstraints(pattern=THEME_NAME)], WordLists] = Field(
        default_factory=dict
    )
    """Comment themes: name -> words per language (the dashboard's all-ratings page filters and
    counts answers by them; a rule's `match.contains_any` may name one)."""
    dispatch: Dispatch | None = None
    """b24-nps asking customers itself (docs/dispatch.md); None: nothing is sent."""
    survey_page: SurveyPageSection | None = None
    """What this portal's customers see on the survey page (docs/survey.md); None: the
    deployment's page YAML."""

    def survey_names(self) -> dict[str, str]:
        """Every survey dispatch may ask, by name: `deal` (a deal survey) or the segment's kind."""
        names: dict[str, str] = {d.name: "deal" for d in self.deal_surveys}
        for segment in self.survey.segments:
            if segment.name is not None:
                names.setdefault(segment.name, segment.kind)
        return names

    def equipment_segment(self, sku: str) -> EquipmentSegment | None:
        """The equipment segment whose product is `sku`."""
        return next(
            (
                s
                for s in self.survey.segments
                if isinstance(s, EquipmentSegment) and s.product.sku == sku
            ),
            None,
        )

    def deal_survey(self, category_id: int) -> DealSurvey | None:
        return next((d for d in self.deal_surveys if d.category_id == category_id), None)

    def theme_words(self) -> dict[str, tuple[str, ...]]:
        """Each theme's words, every language together."""
        return {name: word_list(lists) for name, lists in self.themes.items()}

    def comment_words(self, match: RuleMatch) -> tuple[str, ...] | None:
        """The words `match.contains_any` asks a comment for; None when it asks for none."""
        wanted = match.contains_any
        if wanted is None:
            return None
        return word_list(self.themes[wanted] if isinstance(wanted, str) else wanted)

    @model_validator(mode="after")
    def _rules_name_known_segments_and_skus(self) -> PortalConfig:
        categories = {segment.category_id for segment in self.survey.segments}
        categories |= {deal.category_id for deal in self.deal_surveys}
        skus = {
            product.sku
            for segment in self.survey.segments
            for product in (
                segment.products if isinstance(segment, CosmeticsSegment) else [segment.product]
            )
        }
        skus |= {deal.product.sku for deal in self.deal_surveys}
        problems = self._deal_survey_problems()
        problems.extend(self._dispatch_problems())
        deal_names = {deal.name for deal in self.deal_surveys}
        problems.extend(
            f"survey_page.deal_texts.{name}: no deal survey has this name (deal surveys:"
            f" {', '.join(sorted(deal_names)) or 'none'})"
            for name in (self.survey_page.deal_texts if self.survey_page else {})
            if name not in deal_names
        )
        problems.extend(
            f"themes.{name}: no words; give words per language, e.g. en: [delivery]"
            for name, lists in self.themes.items()
            if not lists
        )
        for rule in self.routing.rules:
            problems.extend(self._rule_problems(rule))
            theme = rule.match.contains_any
            if isinstance(theme, str) and theme not in self.themes:
                problems.append(
                    f"rule {rule.name!r}: match.contains_any names no theme: {theme!r} (known:"
                    f" {', '.join(self.themes) or 'none; define them under themes'})"
                )
            unknown_segments = sorted(set(rule.match.segment or ()) - categories)
            if unknown_segments:
                problems.append(
                    f"rule {rule.name!r}: match.segment names no survey segment: "
                    f"{', '.join(map(str, unknown_segments))} (known: "
                    f"{', '.join(map(str, sorted(categories)))})"
                )
            unknown_skus = sorted(set(rule.match.sku or ()) - skus)
            if unknown_skus:
                problems.append(
                    f"rule {rule.name!r}: match.sku names no survey product: "
                    f"{', '.join(unknown_skus)} (known: {', '.join(sorted(skus))})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _deal_survey_problems(self) -> list[str]:
        """Two deal surveys on one funnel, a deal funnel with the id of a smart-process segment
        (reports and rules know a survey by its category id), or a deal survey's sku used by
        another survey."""
        problems = []
        segments = {segment.category_id for segment in self.survey.segments}
        seen: set[int] = set()
        taken = {
            product.sku
            for segment in self.survey.segments
            for product in (
                segment.products if isinstance(segment, CosmeticsSegment) else [segment.product]
            )
        }
        for index, deal in enumerate(self.deal_surveys):
            where = f"deal_surveys[{index}]"
            if deal.category_id in seen:
                problems.append(f"{where}.category_id: {deal.category_id} appears twice")
            elif deal.category_id in segments:
                problems.append(
                    f"{where}.category_id: {deal.category_id} is also a segment of survey.segments;"
                    " reports and routing rules tell surveys apart by category id, so a deal"
                    " funnel needs an id no segment uses"
                )
            seen.add(deal.category_id)
            if deal.product.sku in taken:
                problems.append(
                    f"{where}.product.sku: {deal.product.sku} is already a product of another"
                    " survey; give each survey its own sku"
                )
            taken.add(deal.product.sku)
        return problems

    def _dispatch_problems(self) -> list[str]:
        """Dispatch naming a survey, a funnel or a SKU the YAML does not have."""
        dispatch = self.dispatch
        if dispatch is None:
            return []
        problems = dispatch.channel_problems()
        names = self.survey_names()
        known = ", ".join(sorted(names)) or "none"
        nps_funnels = {deal.category_id for deal in self.deal_surveys}
        for index, trigger in enumerate(dispatch.sales):
            where = f"dispatch.sales[{index}]"
            if trigger.survey is not None and names.get(trigger.survey) != "deal":
                problems.append(
                    f"{where}.survey: {trigger.survey!r} is no deal survey's name (deal surveys:"
                    f" {', '.join(d.name for d in self.deal_surveys) or 'none'})"
                )
            if trigger.funnel in nps_funnels:
                problems.append(
                    f"{where}.funnel: {trigger.funnel} is a deal survey's NPS funnel; give the"
                    " sales funnel whose won deals are surveyed"
                )
            if trigger.products and not dispatch.products:
                problems.append(
                    f"{where}.products: no product is mapped; map the portal's product ids to"
                    " equipment SKUs under dispatch.products"
                )
        for product_id, sku in dispatch.products.items():
            if not product_id.isdigit():
                problems.append(
                    f"dispatch.products: {product_id!r} is no product id (a positive integer)"
                )
            if self.equipment_segment(sku) is None:
                problems.append(
                    f"dispatch.products.{product_id}: {sku!r} is no equipment segment's SKU"
                )
        problems.extend(
            f"dispatch.surveys: {name!r} names no survey (known: {known})"
            for name in dispatch.surveys
            if name not in names
        )
        return problems

    def _rule_problems(self, rule: Rule) -> list[str]:
        """A lead from cosmetics answers, or a task nobody is set to receive."""
        problems = []
        if rule.action in LEAD_ACTIONS and self._may_select_cosmetics(rule.match):
            problems.append(
                f"rule {rule.name!r}: action {rule.action!r} would create {rule.action} leads"
                " from cosmetics answers, and cosmetics answers never make leads; restrict"
                " match.kind to [equipment] (or match.segment/match.sku to equipment ones),"
                " or use action 'task'"
            )
        if (
            rule.action == TASK_ACTION
            and self.routing.task is None
            and "responsible_id" not in rule.params
        ):
            problems.append(
                f"rule {rule.name!r}: action 'task' needs params.responsible_id, as"
                " routing.task (the head of sales' task) is not configured"
            )
        return problems

    def _may_select_cosmetics(self, match: RuleMatch) -> bool:
        """Whether an answer of a cosmetics segment can meet `match` (kind cosmetics or not
        restricted, and neither its segments nor its skus only equipment ones)."""
        cosmetics = [s for s in self.survey.segments if isinstance(s, CosmeticsSegment)]
        categories = {segment.category_id for segment in cosmetics}
        skus = {product.sku for segment in cosmetics for product in segment.products}
        return (
            (match.kind is None or "cosmetics" in match.kind)
            and (match.segment is None or bool(categories & set(match.segment)))
            and (match.sku is None or bool(skus & set(match.sku)))
        )


def contact_field_titles(config: PortalConfig) -> dict[str, str]:
    """What the contact fields b24-nps writes are, in words, by field code: the segment's name
    and the field's role (`Laser A: NPS score`); a field that several segments share (the
    history) is named by its role alone."""
    roles: dict[str, list[tuple[str, str]]] = {}
    for segment in config.survey.segments:
        if isinstance(segment, EquipmentSegment) and segment.contact_fields is not None:
            name = segment.name or segment.product.name
            fields = segment.contact_fields
            for role, code in (
                ("NPS score", fields.score),
                ("NPS date", fields.date),
                ("NPS history", fields.history),
            ):
                if code is not None:
                    roles.setdefault(code, []).append((name, role))
    titles: dict[str, str] = {}
    for code, uses in roles.items():
        names = {name for name, _ in uses}
        role = uses[0][1]
        titles[code] = f"{uses[0][0]}: {role}" if len(names) == 1 else role
    return titles


def routing_summary(config: PortalConfig) -> list[str]:
    """What the configuration decides beyond the field mapping, in words for `nps config check`."""
    task = config.routing.task
    manager = (
        f"the item's responsible ({config.survey.fields.responsible})"
        if config.survey.manager == "item"
        else "the contact's responsible (ASSIGNED_BY_ID)"
    )
    return [
        "head-of-sales task for equipment detractors: "
        + (
            f"user {task.responsible_id}, due in {task.deadline_hours} h"
            if task is not None
            else "off (no routing.task; detractors get the service lead only)"
        ),
        f"manager of an answer (manager reports): {manager}",
        *(_deal_summary(deal, task is not None) for deal in config.deal_surveys),
        *(config.dispatch.summary() if config.dispatch is not None else []),
        *_theme_summary(config),
    ]


def _theme_summary(config: PortalConfig) -> list[str]:
    """The comment themes and the rules that match words in comments, when there are any."""
    lines = [
        f"comment theme {name!r}: {', '.join(words)}"
        for name, words in config.theme_words().items()
    ]
    lines.extend(
        f"rule {rule.name!r} matches comments containing: {', '.join(words)}"
        for rule in config.routing.rules
        if (words := config.comment_words(rule.match)) is not None
    )
    return lines


def _deal_summary(deal: DealSurvey, task: bool) -> str:
    stages = deal.stages
    manager = (
        f"the sales deal's responsible ({deal.sale_deal_field})"
        if deal.sale_deal_field
        else "the NPS deal's responsible"
    )
    return (
        f"deal survey {deal.name!r} (deal category {deal.category_id}): promoter → "
        f"{stages.promoter}, passive → {stages.passive}, detractor → {stages.detractor}; "
        f"head-of-sales task for detractors: {'on' if task else 'off (no routing.task)'}; "
        f"manager: {manager}"
    )


def _describe(error: Any) -> str:
    internal = ("function-after", "tagged-union")
    loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith(internal))
    return f"{loc or '(top level)'}: {error['msg']}"


def parse_portal_config(data: Any, source: str = "portal config") -> PortalConfig:
    """Validate already-loaded YAML data."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with portal, nps, survey and routing keys")
    try:
        return PortalConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"{source} is invalid:\n{problems}") from None


def load_portal_config(path: Path) -> PortalConfig:
    """Read and validate the portal YAML at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (copy config/portal.example.yaml there or set NPS_CONFIG)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected the portal YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start});"
            " expected the portal YAML saved as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_portal_yaml(text, source=str(path))


def parse_portal_yaml(text: str, source: str = "portal config") -> PortalConfig:
    """Parse and validate the text of a portal YAML (`source` names it in the errors)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_portal_config(data, source=source)
