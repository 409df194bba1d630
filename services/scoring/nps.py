"""NPS maths: the category of a score on a scale, and the aggregate of many scores
(docs/scoring.md, The NPS rules).

Pure: imports nothing but the standard library and the event vocabulary.

- `0-10` (the default) and `1-10`: 9-10 promoter, 7-8 passive, 0-6 detractor (0 is not on `1-10`).
- `binary`: 1 (satisfied) promoter, 0 (unsatisfied) detractor.
- NPS = %promoters - %detractors over the answers that carry a score (skipped answers are not in
  the denominator; 0 is a real score), rounded half away from zero to one decimal.
- How sure an NPS is: its 95 % margin of error, ±1.96·SE in NPS points, where
  SE = sqrt((p + d - (p - d)^2) / n) with p and d the shares of promoters and detractors among the
  n scored answers; a number that rests on fewer than a minimum of answers (30 unless configured)
  is marked as too few to rely on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import get_args

from shared.events import Category, Scale

SCALES: tuple[Scale, ...] = get_args(Scale)
SCALE_BOUNDS: dict[Scale, tuple[int, int]] = {"0-10": (0, 10), "1-10": (1, 10), "binary": (0, 1)}
NPS_PLACES = Decimal("0.1")
AVG_PLACES = Decimal("0.01")
Z_95 = Decimal("1.96")
"""The normal quantile of a two-sided 95 % interval."""
DEFAULT_MIN_ANSWERS = 30
"""Below this many scored answers a number is marked as resting on too few answers."""


class ScoreError(ValueError):
    """A score that is not on the scale (or a scale that does not exist)."""


def categorize(score: int, scale: Scale = "0-10") -> Category:
    """The NPS category of `score` on `scale`; raises `ScoreError` when it is off the scale."""
    if scale not in SCALE_BOUNDS:
        raise ScoreError(f"scale {scale!r} is unknown; expected one of {', '.join(SCALES)}")
    low, high = SCALE_BOUNDS[scale]
    if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
        raise ScoreError(
            f"score {score!r} is not on the {scale} scale; expected an integer {low}..{high}"
        )
    if scale == "binary":
        return "promoter" if score == 1 else "detractor"
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


def _rounded(numerator: int, denominator: int, places: Decimal) -> float:
    """numerator / denominator rounded half away from zero (exact: no binary float on the way)."""
    return float((Decimal(numerator) / Decimal(denominator)).quantize(places, ROUND_HALF_UP))


def nps_score(promoters: int, detractors: int, answers: int) -> float | None:
    """%promoters - %detractors over `answers` scored answers; None when there are none."""
    if answers == 0:
        return None
    return _rounded(100 * (promoters - detractors), answers, NPS_PLACES)


def nps_margin(promoters: int, detractors: int, answers: int) -> float | None:
    """The 95 % margin of error of the NPS of `answers` scored answers, in NPS points (±), rounded
    half away from zero to one decimal; None when there are none.

    SE = sqrt((p + d - (p - d)^2) / n) = sqrt(((P + D)·n - (P - D)^2) / n^3) with P, D the counts:
    the numerator is computed in integers, so all-promoter or all-detractor sets give exactly 0.
    """
    if answers == 0:
        return None
    spread = (promoters + detractors) * answers - (promoters - detractors) ** 2
    se = math.sqrt(spread / answers**3)
    return float((100 * Z_95 * Decimal(se)).quantize(NPS_PLACES, ROUND_HALF_UP))


def too_few_answers(answers: int, minimum: int = DEFAULT_MIN_ANSWERS) -> bool:
    """Whether a number over `answers` scored answers rests on too few to rely on (an empty set
    has no number to mark)."""
    return 0 < answers < minimum


@dataclass(frozen=True)
class NpsAggregate:
    """Counts of a set of scored answers, and the NPS and average score they give."""

    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    score_sum: int = 0

    @property
    def answers(self) -> int:
        """Scored answers: the NPS denominator (skipped answers are not counted)."""
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> float | None:
        return nps_score(self.promoters, self.detractors, self.answers)

    @property
    def margin(self) -> float | None:
        """The 95 % margin of error of `nps`, in NPS points; None without answers."""
        return nps_margin(self.promoters, self.detractors, self.answers)

    @property
    def avg_score(self) -> float | None:
        """Sum of scores / number of scored answers, to two decimals; None without answers."""
        if self.answers == 0:
            return None
        return _rounded(self.score_sum, self.answers, AVG_PLACES)

    def __add__(self, other: NpsAggregate) -> NpsAggregate:
        return NpsAggregate(
            promoters=self.promoters + other.promoters,
            passives=self.passives + other.passives,
            detractors=self.detractors + other.detractors,
            score_sum=self.score_sum + other.score_sum,
        )

    def __neg__(self) -> NpsAggregate:
        return NpsAggregate(-self.promoters, -self.passives, -self.detractors, -self.score_sum)

    @classmethod
    def of(cls, score: int, category: Category) -> NpsAggregate:
        """The contribution of one scored answer."""
        return cls(
            promoters=int(category == "promoter"),
            passives=int(category == "passive"),
            detractors=int(category == "detractor"),
            score_sum=score,
        )

    @classmethod
    def of_scores(cls, scores: Iterable[int | None], scale: Scale = "0-10") -> NpsAggregate:
        """Aggregate raw scores on `scale`; `None` (skipped) is left out."""
        total = cls()
        for score in scores:
            if score is not None:
                total += cls.of(score, categorize(score, scale))
        return total
