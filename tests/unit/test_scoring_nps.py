"""NPS maths: categories on every scale, NPS rounding, the aggregate; a property test."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.nps import (
    NpsAggregate,
    ScoreError,
    categorize,
    nps_margin,
    nps_score,
    too_few_answers,
)
from shared.events import Category, Scale

CATEGORIES: list[tuple[Scale, int, Category]] = [
    *[("0-10", score, "detractor") for score in range(7)],
    ("0-10", 7, "passive"),
    ("0-10", 8, "passive"),
    ("0-10", 9, "promoter"),
    ("0-10", 10, "promoter"),
    *[("1-10", score, "detractor") for score in range(1, 7)],
    ("1-10", 7, "passive"),
    ("1-10", 8, "passive"),
    ("1-10", 9, "promoter"),
    ("1-10", 10, "promoter"),
    ("binary", 1, "promoter"),
    ("binary", 0, "detractor"),
]


@pytest.mark.parametrize(("scale", "score", "expected"), CATEGORIES)
def test_category_of_every_score(scale: Scale, score: int, expected: Category) -> None:
    assert categorize(score, scale) == expected


def test_default_scale_is_0_to_10() -> None:
    assert categorize(0) == "detractor"
    assert categorize(9) == "promoter"


@pytest.mark.parametrize(
    ("scale", "score", "expected_range"),
    [
        ("0-10", -1, "0..10"),
        ("0-10", 11, "0..10"),
        ("1-10", 0, "1..10"),
        ("1-10", 11, "1..10"),
        ("binary", 2, "0..1"),
        ("binary", -1, "0..1"),
        ("binary", 10, "0..1"),
    ],
)
def test_off_scale_score_is_a_clear_error(scale: Scale, score: int, expected_range: str) -> None:
    pattern = rf"score {score} is not on the {scale} scale; expected an integer {expected_range}"
    with pytest.raises(ScoreError, match=pattern):
        categorize(score, scale)


@pytest.mark.parametrize("score", [True, 7.0, "7"])
def test_non_integer_score_is_rejected(score: object) -> None:
    with pytest.raises(ScoreError, match="expected an integer"):
        categorize(score, "0-10")  # type: ignore[arg-type]


def test_unknown_scale_is_rejected() -> None:
    expected = r"scale '1-5' is unknown; expected one of 0-10, 1-10, binary"
    with pytest.raises(ScoreError, match=expected):
        categorize(3, "1-5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("promoters", "detractors", "answers", "expected"),
    [
        (0, 0, 0, None),
        (1, 0, 1, 100.0),
        (0, 1, 1, -100.0),
        (0, 0, 5, 0.0),
        (3, 1, 5, 40.0),
        (1, 0, 3, 33.3),
        (2, 0, 3, 66.7),
        (0, 2, 3, -66.7),
        (1, 0, 80, 1.3),  # 1.25: half rounds away from zero
        (0, 1, 80, -1.3),
        (1, 0, 160, 0.6),  # 0.625
        (5, 2, 9, 33.3),
    ],
)
def test_nps_score(promoters: int, detractors: int, answers: int, expected: float | None) -> None:
    assert nps_score(promoters, detractors, answers) == expected


def test_aggregate_leaves_skipped_out_and_counts_zero() -> None:
    aggregate = NpsAggregate.of_scores([10, 9, 8, 0, None, 6, None])
    assert (aggregate.promoters, aggregate.passives, aggregate.detractors) == (2, 1, 2)
    assert aggregate.answers == 5
    assert aggregate.nps == 0.0
    assert aggregate.avg_score == 6.6


def test_aggregate_of_nothing() -> None:
    empty = NpsAggregate.of_scores([None, None])
    assert empty == NpsAggregate()
    assert (empty.answers, empty.nps, empty.avg_score) == (0, None, None)


def test_aggregate_on_binary_scale() -> None:
    aggregate = NpsAggregate.of_scores([1, 1, 0, 1], "binary")
    assert (aggregate.promoters, aggregate.passives, aggregate.detractors) == (3, 0, 1)
    assert aggregate.nps == 50.0
    assert aggregate.avg_score == 0.75


def test_aggregate_rejects_off_scale_scores() -> None:
    with pytest.raises(ScoreError, match="score 0 is not on the 1-10 scale"):
        NpsAggregate.of_scores([5, 0], "1-10")


def test_aggregates_add_and_subtract() -> None:
    a = NpsAggregate.of_scores([10, 3])
    b = NpsAggregate.of_scores([8])
    assert a + b == NpsAggregate.of_scores([10, 3, 8])
    assert a + b + -b == a
    assert a + -a == NpsAggregate()


def test_average_rounds_to_two_decimals() -> None:
    assert NpsAggregate.of_scores([10, 9, 3]).avg_score == 7.33
    assert NpsAggregate.of_scores([10, 9, 7, 9]).avg_score == 8.75


@given(st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=10)), max_size=300))
def test_nps_is_percent_promoters_minus_percent_detractors(scores: list[int | None]) -> None:
    aggregate = NpsAggregate.of_scores(scores)
    scored = [score for score in scores if score is not None]
    assert aggregate.answers == len(scored)
    if not scored:
        assert aggregate.nps is None
        return
    promoters = sum(1 for score in scored if score >= 9)
    detractors = sum(1 for score in scored if score <= 6)
    exact = 100 * promoters / len(scored) - 100 * detractors / len(scored)
    assert aggregate.nps is not None
    assert -100 <= aggregate.nps <= 100
    assert abs(aggregate.nps - exact) <= 0.05 + 1e-9


@given(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=200))
def test_binary_nps_stays_in_bounds(scores: list[int]) -> None:
    aggregate = NpsAggregate.of_scores(scores, "binary")
    assert aggregate.nps is not None
    assert -100 <= aggregate.nps <= 100
    exact = 100 * (scores.count(1) - scores.count(0)) / len(scores)
    assert abs(aggregate.nps - exact) <= 0.05 + 1e-9


@pytest.mark.parametrize(
    ("promoters", "detractors", "answers", "expected"),
    [
        (0, 0, 0, None),  # no answers: no NPS, no margin
        (1, 3, 7, 51.8),  # NPS -28.6 from 7 answers: ±51.8 points
        (50, 30, 100, 17.1),  # p .5, d .3: SE = sqrt((.8 - .04) / 100) = .0872
        (500, 300, 1000, 5.4),  # ten times the answers: about a third of the margin
        (10, 0, 10, 0.0),  # all promoters: no spread
        (0, 10, 10, 0.0),  # all detractors
        (0, 0, 10, 0.0),  # all passives
        (1, 1, 2, 138.6),  # one of each: the widest spread
        (25, 25, 100, 13.9),  # p = d = .25: SE = sqrt(.5 / 100)
    ],
)
def test_margin_of_error_of_nps(
    promoters: int, detractors: int, answers: int, expected: float | None
) -> None:
    assert nps_margin(promoters, detractors, answers) == expected


def test_aggregate_carries_its_margin() -> None:
    total = NpsAggregate(promoters=1, passives=3, detractors=3, score_sum=40)
    assert (total.nps, total.margin) == (-28.6, 51.8)
    assert NpsAggregate().margin is None


@pytest.mark.parametrize(
    ("answers", "minimum", "expected"),
    [
        (0, 30, False),  # nothing to mark: there is no number
        (1, 30, True),
        (7, 30, True),
        (29, 30, True),
        (30, 30, False),
        (500, 30, False),
        (7, 5, False),
        (4, 5, True),
        (1, 1, False),
    ],
)
def test_too_few_answers(answers: int, minimum: int, expected: bool) -> None:
    assert too_few_answers(answers, minimum) is expected
