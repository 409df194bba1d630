"""Routing rules: which actions a scored answer causes. Pure: no I/O, no clock.

Built-in rules (docs/router.md), equipment answers only:

| rule                | when                                   | action    | outcome in the id |
|---------------------|----------------------------------------|-----------|-------------------|
| `builtin:service`   | detractor, or the service-request flag | service   | none: once ever   |
| `builtin:task`      | detractor, when `routing.task` is set  | task      | the category      |
| `builtin:marketing` | promoter                               | marketing | the category      |
| `builtin:contact`   | a contact and mapped contact fields    | contact   | answer version    |

Deal-survey answers (kind `deal`):

| rule            | when                                  | action | outcome in the id            |
|-----------------|---------------------------------------|--------|------------------------------|
| `builtin:stage` | the NPS category moves the deal       | stage  | wanted stage, answer version |
| `builtin:task`  | detractor, when `routing.task` is set | task   | the category                 |

A stage action goes out for every version of a deal answer whose category moves the deal: crm_sync
moves the deal only when it is not at the wanted stage already, so an edited answer moves it again
only when the outcome changed, and an older version never undoes a newer one.

Cosmetics answers cause no built-in action. Declarative rules (`routing.rules`) add actions of
their own, with the category as outcome; their `match.contains_any` picks answers by words in the
comment (case-insensitive substrings, listed per language or named by a theme).

The *outcome* goes into the deterministic `action_id` with the answer and the rule: the same
answer with the same outcome always yields the same id, so the router's record of sent actions
(and crm_sync's `ORIGIN_ID` look-up behind it) drops it, while a changed outcome yields a new id
and goes out.
"""

from __future__ import annotations

import uuid
from string import Formatter
from typing import Any

from shared.events import NpsScored, RouteAction, ScoredAnswer, derived_id
from shared.portal_config import (
    BUILTIN_PATCH_ACTION,
    BUILTIN_STAGE_ACTION,
    DEFAULT_DEADLINE_HOURS,
    PortalConfig,
    Rule,
    RuleMatch,
    contains_any,
)

SERVICE = "service"
MARKETING = "marketing"
TASK = "task"
CONTACT = BUILTIN_PATCH_ACTION
STAGE = BUILTIN_STAGE_ACTION
BUILTIN_ACTIONS: tuple[str, ...] = (SERVICE, MARKETING, TASK, CONTACT, STAGE)
"""The actions crm_sync carries out (the routing keys `route.<action>` of its queue)."""
LANED_ACTIONS: tuple[str, ...] = tuple(a for a in BUILTIN_ACTIONS if a != CONTACT)
"""The actions that may go in crm_sync's urgent lane: contact patches stay in the bulk lane, in
order."""

DEFAULT_TITLES: dict[str, str] = {
    SERVICE: "NPS {score}, service request: {product}",
    MARKETING: "NPS {score}, promoter: {product}",
    TASK: "NPS {score}, detractor: {product}",
}


def builtin_rule(action: str) -> str:
    """The rule name of a built-in action (a declarative rule name cannot contain ':')."""
    return f"builtin:{action}"


def action_id(answer_id: str, rule: str, outcome: str) -> str:
    """The deterministic id of the action `rule` takes about `answer_id` for `outcome`."""
    return str(derived_id("route-action", answer_id, rule, outcome))


def matches(match: RuleMatch, answer: ScoredAnswer, words: tuple[str, ...] | None = None) -> bool:
    """True when every condition given in `match` holds for `answer`; `words` are those its
    `contains_any` asks the comment for (`PortalConfig.comment_words`)."""
    return (
        (match.kind is None or answer.kind in match.kind)
        and (match.category is None or answer.category in match.category)
        and (match.score is None or match.score.contains(answer.score))
        and (match.sku is None or answer.sku in match.sku)
        and (match.segment is None or answer.category_id in match.segment)
        and (match.service_request is None or answer.service_request == match.service_request)
        and (words is None or contains_any(answer.comment, words))
    )


def template_values(answer: ScoredAnswer) -> dict[str, str]:
    """What `{score}`, `{sku}`, `{product}`, `{contact_id}` and `{comment}` stand for."""
    return {
        "score": str(answer.score),
        "sku": answer.sku,
        "product": answer.product_name,
        "contact_id": "" if answer.contact_id is None else str(answer.contact_id),
        "comment": answer.comment or "",
    }


def render(value: Any, values: dict[str, str]) -> Any:
    """Fill the placeholders of every string in `value` (nested dicts and lists included).

    The templates were validated when the portal YAML was loaded: only known names, no format
    specs, so plain substitution is all there is to do.
    """
    if isinstance(value, dict):
        return {key: render(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, values) for item in value]
    if not isinstance(value, str):
        return value
    return "".join(
        literal + (values[name] if name is not None else "")
        for literal, name, _spec, _conversion in Formatter().parse(value)
    )


def answer_params(answer: ScoredAnswer) -> dict[str, Any]:
    """What every lead, task or custom action carries about its answer."""
    return {
        "score": answer.score,
        "category": answer.category,
        "product": answer.product_name,
        "sku": answer.sku,
        "comment": answer.comment,
        "contact_id": answer.contact_id,
        "manager_id": answer.responsible_id,
    }


def default_params(action: str, answer: ScoredAnswer, config: PortalConfig) -> dict[str, Any]:
    """The parameters of `action` before a declarative rule overrides any of them."""
    params = answer_params(answer)
    routing = config.routing
    values = template_values(answer)
    if action == SERVICE:
        params |= {"responsible_id": routing.service.responsible_id}
    elif action == MARKETING:
        params |= {"responsible_id": routing.marketing.responsible_id}
    elif action == TASK and routing.task is not None:
        params |= {
            "responsible_id": routing.task.responsible_id,
            "deadline_hours": routing.task.deadline_hours,
        }
    elif action == TASK:
        params |= {"deadline_hours": DEFAULT_DEADLINE_HOURS}
    if action in DEFAULT_TITLES:
        params["title"] = render(DEFAULT_TITLES[action], values)
    survey = config.deal_survey(answer.category_id) if answer.kind == "deal" else None
    if survey is not None:
        params["survey"] = survey.name
        if action == STAGE:
            params["outcome"] = survey.stages.outcome(answer.category)
    return params


def _has_contact_fields(answer: ScoredAnswer, config: PortalConfig) -> bool:
    segment = config.survey.segment(answer.category_id)
    return (
        segment is not None and segment.kind == "equipment" and segment.contact_fields is not None
    )


def _deal_builtin(answer: ScoredAnswer, config: PortalConfig) -> list[tuple[str, str, str]]:
    survey = config.deal_survey(answer.category_id)
    fired: list[tuple[str, str, str]] = []
    outcome = "leave" if survey is None else survey.stages.outcome(answer.category)
    if outcome != "leave":
        version = f"{outcome}|{answer.updated_at.isoformat()}"
        fired.append((STAGE, builtin_rule(STAGE), version))
    if answer.category == "detractor" and config.routing.task is not None:
        fired.append((TASK, builtin_rule(TASK), answer.category))
    return fired


def _builtin(answer: ScoredAnswer, config: PortalConfig) -> list[tuple[str, str, str]]:
    """(action, rule, outcome) of every built-in rule that fires for `answer`."""
    if answer.kind == "deal":
        return _deal_builtin(answer, config)
    if answer.kind != "equipment":
        return []
    fired: list[tuple[str, str, str]] = []
    if answer.category == "detractor" or answer.service_request:
        fired.append((SERVICE, builtin_rule(SERVICE), "answer"))
    if answer.category == "detractor" and config.routing.task is not None:
        fired.append((TASK, builtin_rule(TASK), answer.category))
    if answer.category == "promoter":
        fired.append((MARKETING, builtin_rule(MARKETING), answer.category))
    if answer.contact_id is not None and _has_contact_fields(answer, config):
        version = f"{answer.updated_at.isoformat()}|{answer.score}"
        fired.append((CONTACT, builtin_rule(CONTACT), version))
    return fired


def is_urgent(action: str, rule: Rule | None, answer: ScoredAnswer, config: PortalConfig) -> bool:
    """Whether `action` goes in crm_sync's urgent lane: the declarative `rule`'s own `urgent`
    when it says, else the first of `routing.urgent` naming the action whose match holds. Only
    crm_sync's actions have lanes (contact patches stay in the bulk lane): an integrator's action
    keeps its `route.<action>`."""
    if action not in LANED_ACTIONS:
        return False
    if rule is not None and rule.urgent is not None:
        return rule.urgent
    return any(
        when.action == action and matches(when.match, answer) for when in config.routing.urgent
    )


def _route_action(
    event: NpsScored,
    action: str,
    rule: str,
    outcome: str,
    params: dict[str, Any],
    *,
    urgent: bool,
) -> RouteAction:
    answer = event.answer
    identifier = action_id(answer.answer_id, rule, outcome)
    return RouteAction(
        event_id=uuid.UUID(identifier),
        correlation_id=event.correlation_id,
        causation_id=str(event.event_id),
        action_id=identifier,
        action=action,
        rule=rule,
        answer=answer,
        params=params,
        urgent=urgent,
    )


def _declared(event: NpsScored, rule: Rule, config: PortalConfig) -> RouteAction:
    answer = event.answer
    params = default_params(rule.action, answer, config)
    params |= render(rule.params, template_values(answer))
    urgent = is_urgent(rule.action, rule, answer, config)
    return _route_action(event, rule.action, rule.name, answer.category, params, urgent=urgent)


def plan_actions(event: NpsScored, config: PortalConfig) -> list[RouteAction]:
    """Every action `event` calls for: built-in rules first, then declarative ones in YAML order.

    Whether an action already went out for an earlier version of the answer is not decided here:
    its `action_id` is the same as then, and the router's record of sent actions drops it.
    """
    answer = event.answer
    actions = [
        _route_action(
            event,
            action,
            rule,
            outcome,
            default_params(action, answer, config),
            urgent=is_urgent(action, None, answer, config),
        )
        for action, rule, outcome in _builtin(answer, config)
    ]
    actions.extend(
        _declared(event, rule, config)
        for rule in config.routing.rules
        if matches(rule.match, answer, config.comment_words(rule.match))
    )
    return actions
