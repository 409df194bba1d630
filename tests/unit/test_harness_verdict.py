"""The chaos verdict's check of NPS deals: the stage each answer calls for, moved at most once,
and never moved when the outcome is "leave"."""

from __future__ import annotations

from typing import Any

import pytest

from services.harness.verdict import Verdict, _check_deals, _NpsDeal
from shared.portal_config import PortalConfig, load_portal_config
from tests.support.paths import EXAMPLE_CONFIG

WON, LOSE = "C20:WON", "C20:LOSE"


def _config(**stages: str) -> PortalConfig:
    config = load_portal_config(EXAMPLE_CONFIG)
    survey = config.deal_surveys[0]
    moved = survey.model_copy(update={"stages": survey.stages.model_copy(update=stages)})
    return config.model_copy(update={"deal_surveys": [moved]})


def _deal(score: int, stage: str, moves: int) -> dict[str, Any]:
    return {
        "ID": "7",
        "UF_CRM_NPS_SCORE": str(score),
        "STAGE_ID": stage,
        "stage_moves": [{}] * moves,
    }


@pytest.mark.parametrize(
    ("stages", "score", "stage", "moves", "lost", "duplicated"),
    [
        ({}, 10, WON, 1, 0, 0),
        ({}, 10, WON, 2, 0, 1),
        ({}, 2, LOSE, 1, 0, 0),
        ({}, 2, WON, 1, 1, 0),
        ({"passive": "leave"}, 8, "C20:NEW", 0, 0, 0),
        ({"passive": "leave"}, 8, WON, 1, 0, 1),
        ({"passive": "leave"}, 8, WON, 2, 0, 2),
    ],
    ids=[
        "moved",
        "moved-twice",
        "lost",
        "wrong-stage",
        "left",
        "left-but-moved",
        "left-moved-twice",
    ],
)
def test_each_nps_deal_is_at_its_stage_and_moved_as_often_as_its_outcome_allows(
    stages: dict[str, str], score: int, stage: str, moves: int, lost: int, duplicated: int
) -> None:
    config = _config(**stages)
    nps = _NpsDeal(
        _deal(score, stage, moves), config.deal_surveys[0], {"success": WON, "failure": LOSE}
    )
    tasks = [{"UF_CRM_TASK": ["D_7"]}] if score <= 6 else []
    verdict = Verdict()
    _check_deals(verdict, [nps], {(2, 7)}, tasks, config)
    assert (verdict.lost, verdict.duplicated) == (lost, duplicated), verdict.details
