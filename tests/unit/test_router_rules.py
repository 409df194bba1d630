"""Routing rules as tables: built-in rules, supersede cases, declarative rules (pure, no I/O)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.router.rules import (
    action_id,
    builtin_rule,
    plan_actions,
    render,
    template_values,
)
from shared.events import NpsScored
from shared.portal_config import (
    DEFAULT_URGENT,
    TEMPLATE_PLACEHOLDERS,
    PortalConfig,
    parse_portal_config,
)
from tests.support.router import scored


def with_rules(config: PortalConfig, *rules: dict[str, Any]) -> PortalConfig:
    data = config.model_dump(mode="json", exclude_none=True)
    data["routing"]["rules"] = list(rules)
    return parse_portal_config(data)


def actions_of(event: NpsScored, config: PortalConfig) -> list[str]:
    return [action.action for action in plan_actions(event, config)]


# ---------------------------------------------------------------- built-in rules


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (scored("detractor", 0), ["service", "task", "contact"]),
        (scored("detractor", 6), ["service", "task", "contact"]),
        (scored("detractor", 3, service_request=True), ["service", "task", "contact"]),
        (scored("passive", 7), ["contact"]),
        (scored("passive", 8, service_request=True), ["service", "contact"]),
        (scored("promoter", 9), ["marketing", "contact"]),
        (scored("promoter", 10, service_request=True), ["service", "marketing", "contact"]),
        (scored("detractor", 2, contact_id=None), ["service", "task"]),
        (scored("passive", 7, contact_id=None), []),
        (scored("detractor", 2, category_id=99), ["service", "task"]),
        (scored("detractor", 1, kind="cosmetics"), []),
        (scored("promoter", 10, kind="cosmetics"), []),
        (scored("passive", 7, kind="cosmetics", service_request=True), []),
    ],
    ids=[
        "detractor-0",
        "detractor-6",
        "detractor-with-service-flag",
        "passive",
        "passive-with-service-flag",
        "promoter",
        "promoter-with-service-flag",
        "detractor-without-contact",
        "passive-without-contact",
        "segment-not-configured-no-contact-patch",
        "cosmetics-detractor",
        "cosmetics-promoter",
        "cosmetics-with-service-flag",
    ],
)
def test_builtin_rules(event: NpsScored, expected: list[str], portal_config: PortalConfig) -> None:
    assert actions_of(event, portal_config) == expected


def test_no_contact_patch_for_a_segment_without_contact_fields(
    portal_config: PortalConfig,
) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    for segment in data["survey"]["segments"]:
        segment.pop("contact_fields", None)
    config = parse_portal_config(data)
    assert actions_of(scored("passive"), config) == []
    assert actions_of(scored("detractor"), config) == ["service", "task"]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (scored("detractor", 0), ["service", "contact"]),
        (scored("detractor", 3, service_request=True), ["service", "contact"]),
        (scored("promoter", 10), ["marketing", "contact"]),
    ],
    ids=["detractor", "detractor-with-service-flag", "promoter"],
)
def test_no_task_without_routing_task(
    event: NpsScored, expected: list[str], portal_config: PortalConfig
) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    del data["routing"]["task"]
    assert actions_of(event, parse_portal_config(data)) == expected


def test_a_task_rule_without_routing_task_has_the_default_deadline(
    portal_config: PortalConfig,
) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    del data["routing"]["task"]
    data["routing"]["rules"] = [
        {
            "name": "complaint",
            "match": {"score": {"max": 1}},
            "action": "task",
            "params": {"responsible_id": 31},
        }
    ]
    (task,) = [
        a
        for a in plan_actions(scored("detractor", 0), parse_portal_config(data))
        if a.action == "task"
    ]
    assert (task.rule, task.params["responsible_id"], task.params["deadline_hours"]) == (
        "complaint",
        31,
        24,
    )


def test_builtin_params(portal_config: PortalConfig) -> None:
    by_action = {a.action: a for a in plan_actions(scored("detractor", 2), portal_config)}
    about_answer = {
        "score": 2,
        "category": "detractor",
        "product": "Laser A",
        "sku": "EQ-LASER-A",
        "comment": "It stopped heating",
        "contact_id": 42,
        "manager_id": 7,
    }
    assert by_action["service"].params == about_answer | {
        "responsible_id": 17,
        "title": "NPS 2, service request: Laser A",
    }
    assert by_action["task"].params == about_answer | {
        "responsible_id": 5,
        "deadline_hours": 24,
        "title": "NPS 2, detractor: Laser A",
    }
    assert by_action["contact"].params == about_answer
    marketing = plan_actions(scored("promoter", 10), portal_config)[0]
    assert marketing.params["responsible_id"] == 23
    assert marketing.params["title"] == "NPS 10, promoter: Laser A"


def test_actions_carry_rule_answer_and_routing_key(portal_config: PortalConfig) -> None:
    event = scored("detractor")
    for action in plan_actions(event, portal_config):
        assert action.rule == builtin_rule(action.action)
        assert action.answer == event.answer
        lane = ".urgent" if action.action in {"service", "task"} else ""
        assert action.routing_key() == f"route.{action.action}{lane}"
        assert action.correlation_id == event.correlation_id
        assert action.causation_id == str(event.event_id)


def test_action_ids_come_from_the_answer_not_the_event(portal_config: PortalConfig) -> None:
    first, redelivered = scored("detractor"), scored("detractor")
    assert first.event_id != redelivered.event_id
    ids = [a.action_id for a in plan_actions(first, portal_config)]
    assert ids == [a.action_id for a in plan_actions(redelivered, portal_config)]
    assert len(set(ids)) == len(ids)
    assert all(str(a.event_id) == a.action_id for a in plan_actions(first, portal_config))
    other_item = [
        a.action_id for a in plan_actions(scored("detractor", item_id=502), portal_config)
    ]
    assert not set(ids) & set(other_item)


def test_action_id_is_stable_across_releases() -> None:
    # Changing the derivation would re-send every action of every replayed answer.
    assert action_id("m1:501:EQ-LASER-A", "builtin:task", "detractor") == str(
        uuid.uuid5(
            uuid.UUID("6f1d7a52-3c0e-4f0b-9a4e-8d2b1c5e7f10"),
            "route-action|m1:501:EQ-LASER-A|builtin:task|detractor",
        )
    )


# ---------------------------------------------------------------- superseded answers


def sent_anew(versions: list[NpsScored], config: PortalConfig) -> list[str]:
    """What the last version sends, given that every earlier version's actions went out."""
    earlier = {a.action_id for event in versions[:-1] for a in plan_actions(event, config)}
    return [a.action for a in plan_actions(versions[-1], config) if a.action_id not in earlier]


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        (
            [scored("passive", 7), scored("detractor", 3, version=1, supersedes="passive")],
            ["service", "task", "contact"],
        ),
        (
            [scored("detractor", 3), scored("detractor", 5, version=1, supersedes="detractor")],
            ["contact"],
        ),
        (
            [scored("detractor", 3), scored("detractor", 3, version=1, supersedes="detractor")],
            ["contact"],
        ),
        (
            [scored("detractor", 3), scored("promoter", 9, version=1, supersedes="detractor")],
            ["marketing", "contact"],
        ),
        (
            [scored("promoter", 9), scored("promoter", 10, version=1, supersedes="promoter")],
            ["contact"],
        ),
        (
            [scored("promoter", 9), scored("detractor", 4, version=1, supersedes="promoter")],
            ["service", "task", "contact"],
        ),
        (
            [scored("detractor", 2), scored("passive", 8, version=1, supersedes="detractor")],
            ["contact"],
        ),
        (
            [
                scored("passive", 7, service_request=True),
                scored("detractor", 3, version=1, supersedes="passive"),
            ],
            ["task", "contact"],
        ),
        (
            [
                scored("passive", 7),
                scored("passive", 7, version=1, service_request=True, supersedes="passive"),
            ],
            ["service", "contact"],
        ),
        (
            [
                scored("detractor", 3),
                scored("promoter", 9, version=1, supersedes="detractor"),
                scored("detractor", 2, version=2, supersedes="promoter"),
            ],
            ["contact"],
        ),
        (
            [scored("detractor", 3, kind="cosmetics"), scored("promoter", 9, kind="cosmetics")],
            [],
        ),
    ],
    ids=[
        "passive-becomes-detractor",
        "detractor-stays-detractor",
        "detractor-resubmitted-unchanged",
        "detractor-becomes-promoter",
        "promoter-stays-promoter",
        "promoter-becomes-detractor",
        "detractor-becomes-passive",
        "service-lead-already-sent-for-the-answer",
        "service-flag-ticked-later",
        "back-to-detractor-after-promoter",
        "cosmetics-never",
    ],
)
def test_superseded_answers(
    versions: list[NpsScored], expected: list[str], portal_config: PortalConfig
) -> None:
    assert sent_anew(versions, portal_config) == expected


# ---------------------------------------------------------------- declarative rules

TELEGRAM = {
    "name": "laser-alarm",
    "match": {"kind": ["equipment"], "category": ["detractor"]},
    "action": "telegram",
    "params": {"chat": "service-desk"},
}


@pytest.mark.parametrize(
    ("match", "event", "fires"),
    [
        ({}, scored("passive", kind="cosmetics"), True),
        ({"kind": ["cosmetics"]}, scored("detractor", kind="cosmetics"), True),
        ({"kind": ["cosmetics"]}, scored("detractor"), False),
        ({"category": ["detractor", "passive"]}, scored("passive"), True),
        ({"category": ["detractor", "passive"]}, scored("promoter"), False),
        ({"score": {"min": 0, "max": 2}}, scored("detractor", 0), True),
        ({"score": {"min": 0, "max": 2}}, scored("detractor", 2), True),
        ({"score": {"min": 0, "max": 2}}, scored("detractor", 3), False),
        ({"score": {"min": 9}}, scored("promoter", 9), True),
        ({"score": {"min": 9}}, scored("passive", 8), False),
        ({"score": {"max": 4}}, scored("detractor", 4), True),
        ({"score": {"max": 4}}, scored("detractor", 5), False),
        ({"sku": ["EQ-LASER-A"]}, scored("promoter"), True),
        ({"sku": ["EQ-CRYO-B"]}, scored("promoter"), False),
        ({"segment": [12, 14]}, scored("promoter"), True),
        ({"segment": [14]}, scored("promoter"), False),
        ({"service_request": True}, scored("passive", service_request=True), True),
        ({"service_request": True}, scored("passive"), False),
        ({"service_request": False}, scored("passive"), True),
        (
            {"kind": ["equipment"], "category": ["detractor"], "score": {"max": 1}},
            scored("detractor", 1),
            True,
        ),
        (
            {"kind": ["equipment"], "category": ["detractor"], "score": {"max": 1}},
            scored("detractor", 2),
            False,
        ),
    ],
)
def test_declarative_match(
    match: dict[str, Any], event: NpsScored, fires: bool, portal_config: PortalConfig
) -> None:
    config = with_rules(portal_config, {"name": "r", "match": match, "action": "notify"})
    assert ("notify" in actions_of(event, config)) is fires


def test_declarative_rule_publishes_its_route_after_the_builtins(
    portal_config: PortalConfig,
) -> None:
    config = with_rules(portal_config, TELEGRAM)
    actions = plan_actions(scored("detractor", 1), config)
    assert [a.action for a in actions] == ["service", "task", "contact", "telegram"]
    telegram = actions[-1]
    assert telegram.rule == "laser-alarm"
    assert telegram.routing_key() == "route.telegram"
    assert telegram.params["chat"] == "service-desk"
    assert telegram.params["score"] == 1
    assert telegram.params["manager_id"] == 7
    assert "responsible_id" not in telegram.params


def test_templates_fill_every_placeholder(portal_config: PortalConfig) -> None:
    rule = {
        "name": "templated",
        "action": "notify",
        "params": {
            "title": "{product} ({sku}) scored {score} by contact {contact_id}: {comment}",
            "lines": ["score {score}", {"nested": "{{literal}} {sku}"}],
            "retries": 3,
        },
    }
    config = with_rules(portal_config, rule)
    notify = plan_actions(scored("detractor", 4), config)[-1]
    assert notify.params["title"] == (
        "Laser A (EQ-LASER-A) scored 4 by contact 42: It stopped heating"
    )
    assert notify.params["lines"] == ["score 4", {"nested": "{literal} EQ-LASER-A"}]
    assert notify.params["retries"] == 3


def test_every_placeholder_the_config_accepts_has_a_value() -> None:
    assert set(template_values(scored().answer)) == set(TEMPLATE_PLACEHOLDERS)


def test_missing_contact_and_comment_render_empty(portal_config: PortalConfig) -> None:
    values = template_values(scored("detractor", contact_id=None, comment=None).answer)
    assert render("[{contact_id}] [{comment}]", values) == "[] []"


def test_rule_on_a_builtin_action_overrides_its_defaults(portal_config: PortalConfig) -> None:
    rule = {
        "name": "cosmetics-complaint",
        "match": {"kind": ["cosmetics"], "category": ["detractor"]},
        "action": "task",
        "params": {"responsible_id": 31, "title": "Complaint about {product}: {score}"},
    }
    config = with_rules(portal_config, rule)
    (task,) = plan_actions(scored("detractor", 2, kind="cosmetics"), config)
    assert task.routing_key() == "route.task.urgent"
    assert task.rule == "cosmetics-complaint"
    assert task.params["responsible_id"] == 31
    assert task.params["deadline_hours"] == 24
    assert task.params["title"] == "Complaint about Serum: 2"


def test_rule_on_a_builtin_action_adds_to_the_builtin_one(portal_config: PortalConfig) -> None:
    rule = {"name": "second-opinion", "match": {"score": {"max": 1}}, "action": "task"}
    config = with_rules(portal_config, rule)
    tasks = [a for a in plan_actions(scored("detractor", 0), config) if a.action == "task"]
    assert [t.rule for t in tasks] == ["builtin:task", "second-opinion"]
    assert tasks[0].action_id != tasks[1].action_id


@pytest.mark.parametrize(
    ("versions", "fires_anew"),
    [
        ([scored("detractor", 1), scored("detractor", 0, version=1)], False),
        ([scored("passive", 7), scored("detractor", 1, version=1)], True),
        ([scored("detractor", 1), scored("passive", 7, version=1)], True),
        ([scored("detractor", 1), scored("promoter", 9, version=1)], False),
    ],
    ids=["same-category", "became-detractor", "became-passive", "no-longer-matches"],
)
def test_declarative_rules_fire_once_per_answer_and_category(
    versions: list[NpsScored], fires_anew: bool, portal_config: PortalConfig
) -> None:
    rule = {"name": "any-low", "match": {"category": ["detractor", "passive"]}, "action": "notify"}
    assert ("notify" in sent_anew(versions, with_rules(portal_config, rule))) is fires_anew


def with_urgent(config: PortalConfig, urgent: list[dict[str, Any]] | None) -> PortalConfig:
    data = config.model_dump(mode="json", exclude_none=True)
    if urgent is None:
        del data["routing"]["urgent"]
    else:
        data["routing"]["urgent"] = urgent
    return parse_portal_config(data)


def keys_of(event: NpsScored, config: PortalConfig) -> list[str]:
    return [action.routing_key() for action in plan_actions(event, config)]


@pytest.mark.parametrize(
    ("event", "urgent", "expected"),
    [
        # the defaults: service leads and tasks are urgent, the contact patch and marketing not
        (
            scored("detractor"),
            None,
            ["route.service.urgent", "route.task.urgent", "route.contact"],
        ),
        (scored("promoter"), None, ["route.marketing", "route.contact"]),
        (
            scored("passive", service_request=True),
            None,
            ["route.service.urgent", "route.contact"],
        ),
        # nothing urgent
        (scored("detractor"), [], ["route.service", "route.task", "route.contact"]),
        # by action and match: only detractors' service leads
        (
            scored("passive", service_request=True),
            [{"action": "service", "match": {"category": ["detractor"]}}],
            ["route.service", "route.contact"],
        ),
        (
            scored("detractor"),
            [{"action": "service", "match": {"category": ["detractor"]}}],
            ["route.service.urgent", "route.task", "route.contact"],
        ),
        # promoters' marketing leads made urgent
        (
            scored("promoter"),
            [{"action": "marketing"}],
            ["route.marketing.urgent", "route.contact"],
        ),
    ],
)
def test_urgent_lane_by_action(
    event: NpsScored,
    urgent: list[dict[str, Any]] | None,
    expected: list[str],
    portal_config: PortalConfig,
) -> None:
    config = with_urgent(portal_config, urgent)
    assert keys_of(event, config) == expected
    assert [a.urgent for a in plan_actions(event, config)] == [
        key.endswith(".urgent") for key in expected
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # a rule's own `urgent` comes first, either way
        ({"name": "vip", "action": "task", "urgent": False}, "route.task"),
        ({"name": "vip", "action": "marketing", "urgent": True}, "route.marketing.urgent"),
        # without it, routing.urgent decides (the defaults: tasks are urgent)
        ({"name": "vip", "action": "task"}, "route.task.urgent"),
        # an integrator's action has no lanes
        ({"name": "erp", "action": "erp_ticket", "urgent": True}, "route.erp_ticket"),
    ],
)
def test_urgent_lane_by_rule(
    rule: dict[str, Any], expected: str, portal_config: PortalConfig
) -> None:
    match = {"category": ["detractor"], "kind": ["equipment"]}
    config = with_rules(portal_config, {**rule, "match": match})
    assert keys_of(scored("detractor"), config)[-1] == expected


def test_the_default_urgent_set_covers_detractors_stage_moves() -> None:
    """`stage` is urgent for detractors by configuration, once crm_sync carries it out."""
    stage = [w for w in DEFAULT_URGENT if w.action == "stage"]
    assert [w.match.category for w in stage] == [["detractor"]]


def test_the_contact_patch_cannot_be_urgent(portal_config: PortalConfig) -> None:
    with pytest.raises(ValueError, match="action 'contact' cannot be urgent"):
        with_urgent(portal_config, [{"action": "contact"}])


# ---------------------------------------------------------------- comment words and themes

THEMES = {"delivery": {"ru": ["доставк", "курьер"], "en": ["delivery", "courier"]}}
IDEAS = {"ru": ["предлага", "хорошо бы"], "en": ["suggest", "would be nice"]}


@pytest.mark.parametrize(
    ("contains_any", "comment", "fires"),
    [
        (IDEAS, "I suggest a longer cable", True),
        (IDEAS, "I SUGGEST a longer cable", True),
        (IDEAS, "Хорошо бы добавить таймер", True),
        (IDEAS, "ХОРОШО БЫ добавить таймер", True),
        (IDEAS, "Предлагаю сделать шнур длиннее", True),
        (IDEAS, "It stopped heating", False),
        (IDEAS, "", False),
        (IDEAS, None, False),
        ({"en": ["suggest"]}, "Хорошо бы добавить таймер", False),
        ("delivery", "Доставка опоздала на неделю", True),
        ("delivery", "the Courier was rude", True),
        ("delivery", "great device", False),
        ("delivery", None, False),
    ],
)
def test_comment_match(
    contains_any: Any, comment: str | None, fires: bool, portal_config: PortalConfig
) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["themes"] = THEMES
    data["routing"]["rules"] = [
        {"name": "ideas", "match": {"contains_any": contains_any}, "action": "rnd_idea"}
    ]
    config = parse_portal_config(data)
    event = scored("passive", 7, comment=comment)
    assert ("rnd_idea" in actions_of(event, config)) is fires


def test_comment_match_combines_with_the_other_conditions(portal_config: PortalConfig) -> None:
    match = {"category": ["promoter"], "contains_any": IDEAS}
    config = with_rules(portal_config, {"name": "ideas", "match": match, "action": "task"})
    assert actions_of(scored("promoter", 9, comment="I suggest a timer"), config).count("task") == 1
    assert "task" not in actions_of(scored("passive", 7, comment="I suggest a timer"), config)
    assert "task" not in actions_of(scored("promoter", 9, comment="great"), config)
