"""The deal funnel read from `crm.status.list` and the stage decision of the `stage` action."""

from typing import Any

import pytest

from shared.deal_stages import (
    Conflict,
    Funnel,
    Leave,
    Move,
    StageDecision,
    StageOutcome,
    decide_stage,
    funnel_problems,
    read_funnel,
    status_entity_id,
)

NPS = 7


def status(entity: str, status_id: str, sort: int, semantics: str | None) -> dict[str, Any]:
    return {
        "ENTITY_ID": entity,
        "STATUS_ID": status_id,
        "NAME": status_id.title(),
        "SORT": str(sort),
        "SEMANTICS": semantics,
        "CATEGORY_ID": None if entity == "DEAL_STAGE" else entity.rsplit("_", 1)[1],
    }


ROWS = [
    status("DEAL_STAGE_7", "C7:LOSE", 70, "F"),
    status("DEAL_STAGE_7", "C7:NEW", 10, None),
    status("DEAL_STAGE_7", "C7:SENT", 20, None),
    status("DEAL_STAGE_7", "C7:WON", 60, "S"),
    status("DEAL_STAGE_7", "C7:REFUSED", 80, "F"),
    status("DEAL_STAGE", "WON", 60, "S"),
]
FUNNEL = read_funnel(NPS, ROWS)


def test_stages_entity_of_the_default_funnel_and_of_the_others() -> None:
    assert status_entity_id(0) == "DEAL_STAGE"
    assert status_entity_id(7) == "DEAL_STAGE_7"


def test_the_funnel_is_read_in_sort_order_with_its_semantics() -> None:
    assert [s.id for s in FUNNEL.stages] == ["C7:NEW", "C7:SENT", "C7:WON", "C7:LOSE", "C7:REFUSED"]
    assert FUNNEL.success is not None
    assert FUNNEL.success.id == "C7:WON"
    assert FUNNEL.failure is not None
    assert FUNNEL.failure.id == "C7:LOSE"
    assert [s.final for s in FUNNEL.stages] == [False, False, True, True, True]


def test_the_default_funnel_is_read_from_deal_stage() -> None:
    funnel = read_funnel(0, ROWS)
    assert [s.id for s in funnel.stages] == ["WON"]


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        (ROWS, []),
        ([], ["deal_surveys[0].category_id: deal category 7 does not exist (no stages)"]),
        (
            [r for r in ROWS if r["SEMANTICS"] != "S"],
            ["deal_surveys[0].category_id: deal category 7 has no success stage (SEMANTICS S)"],
        ),
        (
            [r for r in ROWS if r["SEMANTICS"] != "F"],
            ["deal_surveys[0].category_id: deal category 7 has no failure stage (SEMANTICS F)"],
        ),
    ],
)
def test_funnel_problems(rows: list[dict[str, Any]], problems: list[str]) -> None:
    assert funnel_problems(read_funnel(NPS, rows), "deal_surveys[0].category_id") == problems


CONFLICT_FINAL = "a person moved the deal to the"
OUTCOMES: list[StageOutcome] = ["success", "failure"]


@pytest.mark.parametrize(
    ("outcome", "category", "current", "ours", "expected"),
    [
        # configured "leave": nothing, wherever the deal is
        ("leave", NPS, "C7:NEW", None, Leave),
        ("leave", NPS, "C7:WON", None, Leave),
        ("leave", 0, "WON", None, Leave),
        # in progress: moved
        ("success", NPS, "C7:NEW", None, Move("C7:WON")),
        ("failure", NPS, "C7:NEW", None, Move("C7:LOSE")),
        ("success", NPS, "C7:SENT", None, Move("C7:WON")),
        ("failure", NPS, "C7:SENT", None, Move("C7:LOSE")),
        # already there: nothing
        ("success", NPS, "C7:WON", None, Leave),
        ("failure", NPS, "C7:LOSE", "C7:LOSE", Leave),
        # a final stage a person chose: a conflict
        ("success", NPS, "C7:LOSE", None, Conflict),
        ("failure", NPS, "C7:WON", None, Conflict),
        ("failure", NPS, "C7:REFUSED", None, Conflict),
        ("success", NPS, "C7:REFUSED", "C7:LOSE", Conflict),
        # a final stage b24-nps chose for an earlier answer: moved again (the outcome changed)
        ("success", NPS, "C7:LOSE", "C7:LOSE", Move("C7:WON")),
        ("failure", NPS, "C7:WON", "C7:WON", Move("C7:LOSE")),
        # another funnel: a conflict, final stage there or not
        ("success", 0, "NEW", None, Conflict),
        ("failure", 0, "WON", None, Conflict),
        ("success", 3, "C3:NEW", "C7:WON", Conflict),
        # a stage the funnel does not list (deleted since): moved
        ("success", NPS, "C7:GONE", None, Move("C7:WON")),
    ],
)
def test_decide_stage(
    outcome: StageOutcome,
    category: int,
    current: str,
    ours: str | None,
    expected: StageDecision | type[StageDecision],
) -> None:
    decision = decide_stage(outcome, FUNNEL, category, current, ours)
    if isinstance(expected, type):
        assert isinstance(decision, expected)
    else:
        assert decision == expected


def test_a_conflict_names_what_the_person_did() -> None:
    decision = decide_stage("success", FUNNEL, NPS, "C7:LOSE", None)
    assert decision == Conflict(
        "a person moved the deal to the failure stage C7:LOSE before b24-nps did"
    )
    moved = decide_stage("success", FUNNEL, 3, "C3:NEW", None)
    assert moved == Conflict("the deal is in funnel 3 now, not the NPS funnel 7")


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_funnel_without_the_wanted_stage_is_an_error(outcome: StageOutcome) -> None:
    with pytest.raises(ValueError, match=f"no {outcome} stage"):
        decide_stage(outcome, Funnel(NPS, ()), NPS, "C7:NEW", None)
