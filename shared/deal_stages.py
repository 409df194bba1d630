"""The stages of a deal funnel and where an NPS answer moves its deal (pure: no I/O).

A deal category's stages come from `crm.status.list` with `ENTITY_ID` = `DEAL_STAGE` (the default
funnel, category 0) or `DEAL_STAGE_<id>`: in-progress stages have `SEMANTICS` empty, the success
stage "S", failure stages "F". So the success and failure stages are resolved from the portal,
never typed by hand.

`decide_stage` is the one place that decides what the `stage` action does to a deal:

- the survey leaves the stage for this NPS category → nothing;
- the deal is no longer in the NPS funnel (a person moved it to another one) → a conflict;
- the deal is already at the wanted stage → nothing to do;
- the deal is at a final stage b24-nps did not put it at (a person closed it) → a conflict;
- otherwise → move it (a final stage b24-nps set for an earlier answer may be replaced, which
  is how a customer's changed answer moves the deal again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Semantics = Literal["process", "success", "failure"]
StageOutcome = Literal["success", "failure", "leave"]
"""What an NPS category does to the deal: the funnel's success stage, its failure stage, nothing."""

_SEMANTICS: dict[str, Semantics] = {"S": "success", "F": "failure"}


def status_entity_id(category_id: int) -> str:
    """`crm.status.list`'s `ENTITY_ID` of a deal category's stages."""
    return "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    semantics: Semantics
    sort: int

    @property
    def final(self) -> bool:
        return self.semantics != "process"


@dataclass(frozen=True)
class Funnel:
    """A deal category and its stages, in the portal's order."""

    category_id: int
    stages: tuple[Stage, ...]

    def stage(self, stage_id: str | None) -> Stage | None:
        return next((s for s in self.stages if s.id == stage_id), None)

    def first(self, semantics: Semantics) -> Stage | None:
        return next((s for s in self.stages if s.semantics == semantics), None)

    @property
    def success(self) -> Stage | None:
        return self.first("success")

    @property
    def failure(self) -> Stage | None:
        """The first failure stage by sort (a funnel may have several, e.g. "lost", "refused")."""
        return self.first("failure")


def read_funnel(category_id: int, rows: Iterable[Any]) -> Funnel:
    """The funnel from `crm.status.list` rows (`STATUS_ID`, `NAME`, `SORT`, `SEMANTICS`,
    `ENTITY_ID`); rows of another entity are left out."""
    wanted = status_entity_id(category_id)
    stages = []
    for row in rows:
        if not isinstance(row, Mapping) or row.get("ENTITY_ID") != wanted:
            continue
        status_id = row.get("STATUS_ID")
        if not isinstance(status_id, str) or not status_id:
            continue
        semantics = _SEMANTICS.get(str(row.get("SEMANTICS") or "").upper(), "process")
        stages.append(Stage(status_id, str(row.get("NAME") or status_id), semantics, _sort(row)))
    stages.sort(key=lambda s: s.sort)
    return Funnel(category_id, tuple(stages))


def _sort(row: Mapping[str, Any]) -> int:
    try:
        return int(row.get("SORT") or 0)
    except (TypeError, ValueError):
        return 0


def funnel_problems(funnel: Funnel, where: str) -> list[str]:
    """What keeps a funnel from being an NPS funnel: no stages, no success or no failure stage."""
    if not funnel.stages:
        return [f"{where}: deal category {funnel.category_id} does not exist (no stages)"]
    problems = []
    finals: tuple[tuple[Semantics, str], ...] = (("success", "S"), ("failure", "F"))
    for semantics, code in finals:
        if funnel.first(semantics) is None:
            problems.append(
                f"{where}: deal category {funnel.category_id} has no {semantics} stage"
                f" (SEMANTICS {code})"
            )
    return problems


@dataclass(frozen=True)
class Move:
    stage_id: str


@dataclass(frozen=True)
class Leave:
    """Nothing to do: the reason says why."""

    reason: str


@dataclass(frozen=True)
class Conflict:
    """A person decided otherwise: the deal is left alone and the reason recorded."""

    reason: str


StageDecision = Move | Leave | Conflict


def decide_stage(
    outcome: StageOutcome,
    funnel: Funnel,
    deal_category: int,
    current_stage: str | None,
    set_by_us: str | None,
) -> StageDecision:
    """Where the `stage` action takes the deal.

    `set_by_us` is the stage b24-nps last moved this deal to (None when it never did).
    Raises `ValueError` when the funnel lacks the wanted stage (`nps config check --portal`
    reports that before any answer).
    """
    if outcome == "leave":
        return Leave("the survey leaves the stage for this answer")
    if deal_category != funnel.category_id:
        return Conflict(
            f"the deal is in funnel {deal_category} now, not the NPS funnel {funnel.category_id}"
        )
    wanted = funnel.first(outcome)
    if wanted is None:
        raise ValueError(f"deal category {funnel.category_id} has no {outcome} stage")
    if current_stage == wanted.id:
        return Leave(f"the deal is already at {wanted.id}")
    current = funnel.stage(current_stage)
    if current is not None and current.final and current_stage != set_by_us:
        return Conflict(
            f"a person moved the deal to the {current.semantics} stage {current.id}"
            " before b24-nps did"
        )
    return Move(wanted.id)
