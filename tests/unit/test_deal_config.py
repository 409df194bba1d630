"""Deal surveys in the portal YAML: what loads, and the errors for what does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app
from shared.portal_config import ConfigError, PortalConfig, parse_portal_config


def deal_survey(**overrides: Any) -> dict[str, Any]:
    return {
        "category_id": 7,
        "name": "After the sale",
        "product": {"sku": "DEAL-SALES", "name": "Sales"},
        "score_field": "UF_CRM_NPS_SCORE",
        "comment_field": "UF_CRM_NPS_COMMENT",
        **overrides,
    }


def with_deals(portal_config: PortalConfig, *surveys: dict[str, Any]) -> dict[str, Any]:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["deal_surveys"] = list(surveys)
    return data


def test_a_deal_survey_loads_with_the_default_stages(portal_config: PortalConfig) -> None:
    config = parse_portal_config(with_deals(portal_config, deal_survey()))
    deal = config.deal_survey(7)
    assert deal is not None
    assert [deal.stages.outcome(c) for c in ("promoter", "passive", "detractor")] == [
        "success",
        "success",
        "failure",
    ]
    assert deal.scale is None
    assert deal.sale_deal_field is None
    assert config.deal_survey(8) is None


def test_deal_surveys_are_optional(portal_config: PortalConfig) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data.pop("deal_surveys", None)
    data.pop("dispatch", None)  # it asks a deal survey
    assert parse_portal_config(data).deal_surveys == []


@pytest.mark.parametrize(
    ("surveys", "message"),
    [
        (
            [deal_survey(), deal_survey(product={"sku": "OTHER", "name": "Other"})],
            "deal_surveys[1].category_id: 7 appears twice",
        ),
        (
            [deal_survey(product={"sku": "EQ-LASER-A", "name": "Laser"})],
            "deal_surveys[0].product.sku: EQ-LASER-A is already a product of another survey",
        ),
        (
            [deal_survey(category_id=12)],
            "deal_surveys[0].category_id: 12 is also a segment of survey.segments",
        ),
        ([deal_survey(stages={"detractor": "lost"})], "deal_surveys.0.stages.detractor"),
        ([deal_survey(category_id=-1)], "deal_surveys.0.category_id"),
        ([deal_survey(score_field="")], "deal_surveys.0.score_field"),
        ([deal_survey(stage="C7:WON")], "deal_surveys.0.stage"),
    ],
    ids=[
        "same-funnel",
        "same-sku",
        "a-segments-id",
        "bad-outcome",
        "bad-category",
        "no-score",
        "unknown-key",
    ],
)
def test_bad_deal_surveys_are_named(
    surveys: list[dict[str, Any]], message: str, portal_config: PortalConfig
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(with_deals(portal_config, *surveys))
    assert message in str(raised.value)


def test_a_rule_may_match_a_deal_survey(portal_config: PortalConfig) -> None:
    data = with_deals(portal_config, deal_survey())
    data["routing"]["rules"] = [
        {"name": "sales-alarm", "action": "telegram", "match": {"segment": [7], "kind": ["deal"]}}
    ]
    assert parse_portal_config(data).routing.rules[0].match.segment == [7]


def test_nps_config_check_says_what_a_deal_survey_does(
    tmp_path: Path, portal_config: PortalConfig
) -> None:
    data = with_deals(
        portal_config,
        deal_survey(stages={"passive": "leave"}, sale_deal_field="UF_CRM_SALE_DEAL"),
    )
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        "deal survey 'After the sale' (deal category 7): promoter → success, passive → leave,"
        " detractor → failure; head-of-sales task for detractors: on; manager: the sales deal's"
        " responsible (UF_CRM_SALE_DEAL)"
    ) in result.output.splitlines()
