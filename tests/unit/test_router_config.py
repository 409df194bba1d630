"""Declarative routing rules in the portal YAML: what loads, and the errors for what does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app
from shared.portal_config import ConfigError, PortalConfig, parse_portal_config


def config_data(portal_config: PortalConfig, *rules: dict[str, Any]) -> dict[str, Any]:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["routing"]["rules"] = list(rules)
    return data


def rule(**overrides: Any) -> dict[str, Any]:
    return {"name": "laser-alarm", "action": "telegram", **overrides}


def test_a_full_rule_loads(portal_config: PortalConfig) -> None:
    full = rule(
        match={
            "kind": ["equipment"],
            "category": ["detractor"],
            "score": {"min": 0, "max": 4},
            "sku": ["EQ-LASER-A", "COS-SERUM"],
            "segment": [12, 10],
            "service_request": True,
        },
        params={"title": "{product}: {score} ({sku}, contact {contact_id}) {comment}", "n": 1},
    )
    config = parse_portal_config(config_data(portal_config, full))
    (loaded,) = config.routing.rules
    assert loaded.match.score is not None
    assert (loaded.match.score.min, loaded.match.score.max) == (0, 4)
    assert loaded.params["n"] == 1


@pytest.mark.parametrize(
    ("bad_rule", "message"),
    [
        (
            rule(params={"title": "NPS {score} from {customer}"}),
            "rule 'laser-alarm': params.title: unknown placeholder {customer}; allowed: "
            "{score}, {sku}, {product}, {contact_id}, {comment}",
        ),
        (
            rule(params={"lines": ["ok {sku}", {"text": "{nps}"}]}),
            "params.lines[1].text: unknown placeholder {nps}",
        ),
        (
            rule(params={"title": "{score:>3}"}),
            "params.title: placeholder {score} takes no format spec or conversion",
        ),
        (rule(params={"title": "{}"}), "params.title: unknown placeholder {}"),
        (rule(params={"title": "NPS {score"}), "params.title: expected '}' before end of string"),
        (
            rule(action="contact"),
            "action 'contact' is the built-in contact-field patch and cannot be sent by a rule",
        ),
        (rule(params={"responsible_id": "17"}), "params.responsible_id must be a positive integer"),
        (rule(params={"responsible_id": 0}), "params.responsible_id must be a positive integer"),
        (rule(params={"deadline_hours": True}), "params.deadline_hours must be a positive integer"),
        (rule(match={"score": {"min": 7, "max": 3}}), "min (7) is above max (3)"),
        (rule(match={"score": {"max": 11}}), "routing.rules.0.match.score.max"),
        (rule(match={"score": {}}), "give min, max or both"),
        (rule(match={"category": []}), "routing.rules.0.match.category"),
        (rule(match={"category": ["angry"]}), "routing.rules.0.match.category.0"),
        (rule(match={"colour": ["red"]}), "routing.rules.0.match.colour: Extra inputs"),
        (
            rule(match={"segment": [12, 77]}),
            "rule 'laser-alarm': match.segment names no survey segment: 77 (known: 10, 12, 14, 20)",
        ),
        (
            rule(match={"sku": ["EQ-LASER-Z"]}),
            "rule 'laser-alarm': match.sku names no survey product: EQ-LASER-Z",
        ),
        (rule(action="Route.Telegram"), "routing.rules.0.action: String should match pattern"),
        (rule(name="Laser Alarm"), "routing.rules.0.name: String should match pattern"),
        (
            rule(match={"contains_any": "weather"}),
            "rule 'laser-alarm': match.contains_any names no theme: 'weather' (known:",
        ),
        (rule(match={"contains_any": {"en": []}}), "routing.rules.0.match.contains_any"),
        (rule(match={"contains_any": {"en": ["  "]}}), "routing.rules.0.match.contains_any"),
        (rule(match={"contains_any": {"English": ["x"]}}), "routing.rules.0.match.contains_any"),
    ],
)
def test_bad_rules_are_named_errors(
    bad_rule: dict[str, Any], message: str, portal_config: PortalConfig
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(config_data(portal_config, bad_rule))
    assert message in str(raised.value)


def test_every_problem_of_a_rule_is_reported_at_once(portal_config: PortalConfig) -> None:
    bad = rule(params={"title": "{who}", "responsible_id": -1})
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(config_data(portal_config, bad))
    assert "unknown placeholder {who}" in str(raised.value)
    assert "params.responsible_id must be a positive integer, got -1" in str(raised.value)


def test_nps_config_check_reports_a_bad_rule(tmp_path: Path, portal_config: PortalConfig) -> None:
    path = tmp_path / "portal.yaml"
    bad = rule(params={"title": "{product} {stars}"})
    path.write_text(yaml.safe_dump(config_data(portal_config, bad)), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "rule 'laser-alarm'" in result.output
    assert "unknown placeholder {stars}" in result.output


def test_nps_config_check_accepts_good_rules(tmp_path: Path, portal_config: PortalConfig) -> None:
    path = tmp_path / "portal.yaml"
    good = rule(match={"category": ["detractor"]}, params={"text": "{product}: {score}"})
    path.write_text(yaml.safe_dump(config_data(portal_config, good)), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def without_task(portal_config: PortalConfig, *rules: dict[str, Any]) -> dict[str, Any]:
    data = config_data(portal_config, *rules)
    del data["routing"]["task"]
    return data


LEAD_FROM_COSMETICS = "would create {action} leads from cosmetics answers"


@pytest.mark.parametrize(
    ("action", "match", "refused"),
    [
        ("service", {}, True),
        ("service", {"kind": ["cosmetics"]}, True),
        ("marketing", {"kind": ["equipment", "cosmetics"]}, True),
        ("marketing", {"category": ["promoter"]}, True),
        ("service", {"service_request": True}, True),
        ("service", {"segment": [10, 12]}, True),
        ("marketing", {"sku": ["COS-SERUM"]}, True),
        ("service", {"kind": ["equipment"]}, False),
        ("marketing", {"segment": [12, 14]}, False),
        ("service", {"sku": ["EQ-LASER-A"]}, False),
        ("service", {"kind": ["cosmetics"], "segment": [12]}, False),
        ("task", {"kind": ["cosmetics"]}, False),
        ("task", {}, False),
        ("notify", {"kind": ["cosmetics"]}, False),
    ],
)
def test_no_lead_from_cosmetics_answers(
    action: str, match: dict[str, Any], refused: bool, portal_config: PortalConfig
) -> None:
    data = config_data(portal_config, rule(name="leads", action=action, match=match))
    if not refused:
        parse_portal_config(data)
        return
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(data)
    assert f"rule 'leads': action {action!r} " + LEAD_FROM_COSMETICS.format(action=action) in str(
        raised.value
    )


def test_nps_config_check_refuses_a_lead_from_cosmetics(
    tmp_path: Path, portal_config: PortalConfig
) -> None:
    path = tmp_path / "portal.yaml"
    bad = rule(name="happy-cosmetics", action="marketing", match={"category": ["promoter"]})
    path.write_text(yaml.safe_dump(config_data(portal_config, bad)), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "rule 'happy-cosmetics': action 'marketing' would create marketing leads" in (
        result.output
    )
    assert "cosmetics answers never make leads" in result.output


def test_routing_task_is_optional(portal_config: PortalConfig) -> None:
    config = parse_portal_config(without_task(portal_config))
    assert config.routing.task is None


@pytest.mark.parametrize(
    ("params", "refused"), [({}, True), ({"responsible_id": 31}, False)], ids=["no-one", "given"]
)
def test_a_task_rule_without_routing_task_names_its_responsible(
    params: dict[str, Any], refused: bool, portal_config: PortalConfig
) -> None:
    data = without_task(portal_config, rule(name="complaint", action="task", params=params))
    if not refused:
        parse_portal_config(data)
        return
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(data)
    assert "rule 'complaint': action 'task' needs params.responsible_id" in str(raised.value)


@pytest.mark.parametrize(
    ("task", "manager", "expected"),
    [
        (
            True,
            "item",
            [
                "head-of-sales task for equipment detractors: user 5, due in 24 h",
                "manager of an answer (manager reports): the item's responsible (assignedById)",
            ],
        ),
        (
            False,
            "contact",
            [
                "head-of-sales task for equipment detractors: off (no routing.task;"
                " detractors get the service lead only)",
                "manager of an answer (manager reports): the contact's responsible"
                " (ASSIGNED_BY_ID)",
            ],
        ),
    ],
    ids=["task-item-manager", "no-task-contact-manager"],
)
def test_nps_config_check_says_what_routing_and_manager_do(
    task: bool, manager: str, expected: list[str], tmp_path: Path, portal_config: PortalConfig
) -> None:
    data = config_data(portal_config) if task else without_task(portal_config)
    data["survey"]["manager"] = manager
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:3] == expected


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("portal", "bulk_min_share", 0, "portal.bulk_min_share: Input should be greater than 0"),
        ("portal", "bulk_min_share", 1, "portal.bulk_min_share: Input should be less than 1"),
        ("routing", "urgent", [{"action": "contact"}], "action 'contact' cannot be urgent"),
        ("routing", "urgent", [{"match": {}}], "routing.urgent.0.action: Field required"),
        (
            "routing",
            "urgent",
            [{"action": "task", "match": {"category": ["angry"]}}],
            "routing.urgent.0.match.category.0",
        ),
    ],
)
def test_bad_lane_settings_are_named_errors(
    section: str, key: str, value: Any, message: str, portal_config: PortalConfig
) -> None:
    data = config_data(portal_config)
    data[section][key] = value
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(data)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("themes", "message"),
    [
        ({"Delivery": {"en": ["late"]}}, "themes.Delivery"),
        ({"delivery": {}}, "themes.delivery: no words; give words per language"),
        ({"delivery": {"en": []}}, "themes.delivery.en: List should have at least 1 item"),
        ({"delivery": {"en": [""]}}, "themes.delivery.en.0"),
        ({"delivery": {"en": "late"}}, "themes.delivery.en: Input should be a valid list"),
        ({"delivery": {"english": ["late"]}}, "themes.delivery.english"),
        (["delivery"], "themes: Input should be a valid dictionary"),
    ],
)
def test_bad_themes_are_named_errors(
    themes: Any, message: str, portal_config: PortalConfig
) -> None:
    data = config_data(portal_config)
    data["themes"] = themes
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(data)
    assert message in str(raised.value)


def test_a_theme_named_without_themes_says_where_to_define_them(
    portal_config: PortalConfig,
) -> None:
    data = config_data(portal_config, rule(match={"contains_any": "delivery"}))
    data.pop("themes", None)
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(data)
    assert "names no theme: 'delivery' (known: none; define them under themes)" in str(raised.value)


def test_themes_and_a_rule_naming_one_load(portal_config: PortalConfig) -> None:
    data = config_data(
        portal_config,
        rule(match={"contains_any": "delivery"}),
        rule(name="ideas", match={"contains_any": {"en": ["suggest"]}}),
    )
    data["themes"] = {"delivery": {"ru": [" доставк ", "курьер"], "en": ["delivery", "курьер"]}}
    config = parse_portal_config(data)
    assert config.theme_words() == {"delivery": ("доставк", "курьер", "delivery")}
    first, second = config.routing.rules
    assert config.comment_words(first.match) == ("доставк", "курьер", "delivery")
    assert config.comment_words(second.match) == ("suggest",)
    assert (
        config.comment_words(
            config.routing.rules[0].match.model_copy(update={"contains_any": None})
        )
        is None
    )


def test_nps_config_check_reports_a_rule_naming_an_unknown_theme(
    tmp_path: Path, portal_config: PortalConfig
) -> None:
    path = tmp_path / "portal.yaml"
    data = config_data(portal_config, rule(match={"contains_any": "ideas"}))
    data["themes"] = {"delivery": {"en": ["courier"]}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "match.contains_any names no theme: 'ideas' (known: delivery)" in result.output


def test_nps_config_check_lists_themes_and_comment_rules(
    tmp_path: Path, portal_config: PortalConfig
) -> None:
    data = config_data(portal_config, rule(name="ideas", match={"contains_any": "ideas"}))
    data["themes"] = {"ideas": {"ru": ["предлага"], "en": ["suggest"]}}
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "comment theme 'ideas': предлага, suggest" in result.output.splitlines()
    assert "rule 'ideas' matches comments containing: предлага, suggest" in result.output
