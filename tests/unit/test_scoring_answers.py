"""What a submission does to stored answers: rows, scored events, retractions, rollup deltas."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import pytest
from pydantic import ValidationError

from services.scoring.answers import (
    NO_MANAGER,
    AnswerRow,
    RollupKey,
    SubmissionError,
    answer_id,
    reconcile,
)
from services.scoring.nps import NpsAggregate
from shared.events import FormSubmitted, PortalRef
from tests.support.scoring import make_submission


def stored(rows: list[AnswerRow]) -> dict[str, AnswerRow]:
    return {row.answer_id: row for row in rows}


def test_first_version_stores_every_answer_and_publishes_the_scored_ones() -> None:
    submission = make_submission(("SERUM", 10), ("CREAM", None), ("MASK", 0))
    change = reconcile(submission, {})

    assert [(r.sku, r.score, r.category, r.current, r.revision) for r in change.rows] == [
        ("SERUM", 10, "promoter", True, 1),
        ("CREAM", None, None, True, 1),
        ("MASK", 0, "detractor", True, 1),
    ]
    serum = change.rows[0]
    assert serum.answer_id == "m-unit:1:SERUM" == answer_id("m-unit", 1038, 1, "SERUM")
    assert (serum.portal, serum.item_id, serum.category_id, serum.segment, serum.kind) == (
        "m-unit",
        1,
        10,
        "Cosmetics",
        "cosmetics",
    )
    assert (serum.contact_id, serum.responsible_id, serum.comment, serum.service_request) == (
        501,
        5,
        "fine",
        False,
    )
    assert serum.source_event_id == submission.event_id
    assert [e.routing_key() for e in change.events] == [
        "nps.scored.cosmetics.promoter",
        "nps.scored.cosmetics.detractor",
    ]
    event = change.events[0]
    assert event.answer.answer_id == serum.answer_id
    assert event.answer.portal == PortalRef(member_id="m-unit", domain="example.bitrix24.ru")
    assert (event.supersedes, event.previous_score, event.previous_category) == (False, None, None)
    assert event.correlation_id == submission.correlation_id
    assert event.causation_id == str(submission.event_id)
    assert change.rollup == {
        RollupKey("m-unit", 10, "SERUM", 5, date(2024, 3, 5)): NpsAggregate(1, 0, 0, 10),
        RollupKey("m-unit", 10, "MASK", 5, date(2024, 3, 5)): NpsAggregate(0, 0, 1, 0),
    }


def test_event_ids_are_deterministic_for_the_same_submission() -> None:
    submission = make_submission(("SERUM", 10), ("MASK", 3))
    first = [e.event_id for e in reconcile(submission, {}).events]
    again = [e.event_id for e in reconcile(submission, {}).events]
    assert first == again
    assert len(set(first)) == 2


def test_newer_version_with_a_new_score_supersedes_the_old_answer() -> None:
    v1 = make_submission(("LASER", 8), kind="equipment", category_id=12, segment="Laser A")
    before = stored(reconcile(v1, {}).rows)
    v2 = make_submission(
        ("LASER", 3),
        kind="equipment",
        category_id=12,
        segment="Laser A",
        updated_at="2024-03-06T09:00:00+03:00",
    )
    change = reconcile(v2, before)

    [row] = change.rows
    assert (row.score, row.category, row.revision, row.source_event_id) == (
        3,
        "detractor",
        2,
        v2.event_id,
    )
    [event] = change.events
    assert event.routing_key() == "nps.scored.equipment.detractor"
    assert (event.supersedes, event.previous_score, event.previous_category) == (
        True,
        8,
        "passive",
    )
    assert event.event_id != reconcile(v1, {}).events[0].event_id
    key = RollupKey("m-unit", 12, "LASER", 5, date(2024, 3, 5))
    assert change.rollup == {key: NpsAggregate(0, -1, 1, -5)}


def test_newer_version_with_the_same_answers_publishes_nothing() -> None:
    before = stored(reconcile(make_submission(("SERUM", 9)), {}).rows)
    change = reconcile(make_submission(("SERUM", 9), updated_at="2024-03-07T00:00:00Z"), before)
    assert change.events == []
    assert change.rollup == {}
    [row] = change.rows
    assert row.revision == 1
    assert row.updated_at == datetime.fromisoformat("2024-03-07T00:00:00+00:00")


def test_a_changed_comment_is_published_again_with_the_same_score() -> None:
    before = stored(reconcile(make_submission(("SERUM", 4)), {}).rows)
    v2 = make_submission(("SERUM", 4), comment="broke again", updated_at="2024-03-08T00:00:00Z")
    [event] = reconcile(v2, before).events
    assert event.answer.comment == "broke again"
    assert (event.supersedes, event.previous_score) == (True, 4)


def test_product_no_longer_ticked_is_retracted() -> None:
    before = stored(reconcile(make_submission(("SERUM", 10), ("CREAM", 6)), {}).rows)
    v2 = make_submission(("SERUM", 10), updated_at="2024-03-09T00:00:00Z")
    change = reconcile(v2, before)

    rows = {row.sku: row for row in change.rows}
    assert (rows["CREAM"].current, rows["CREAM"].score, rows["CREAM"].revision) == (False, 6, 2)
    assert rows["CREAM"].source_event_id == v2.event_id
    assert rows["SERUM"].current
    assert change.events == []
    assert change.rollup == {
        RollupKey("m-unit", 10, "CREAM", 5, date(2024, 3, 5)): NpsAggregate(0, 0, -1, -6)
    }


def test_retracted_product_ticked_again_counts_and_is_published_afresh() -> None:
    v1 = make_submission(("SERUM", 10), ("CREAM", 6))
    v2 = make_submission(("SERUM", 10), updated_at="2024-03-09T00:00:00Z")
    v3 = make_submission(("SERUM", 10), ("CREAM", 9), updated_at="2024-03-10T00:00:00Z")
    state = stored(reconcile(v1, {}).rows)
    state |= stored(reconcile(v2, state).rows)
    change = reconcile(v3, state)

    [event] = change.events
    assert (event.answer.sku, event.supersedes, event.previous_score) == ("CREAM", False, None)
    cream = next(row for row in change.rows if row.sku == "CREAM")
    assert (cream.current, cream.revision) == (True, 3)
    assert change.rollup == {
        RollupKey("m-unit", 10, "CREAM", 5, date(2024, 3, 5)): NpsAggregate(1, 0, 0, 9)
    }


def test_already_retracted_answer_is_left_alone() -> None:
    state = stored(reconcile(make_submission(("SERUM", 10), ("CREAM", 6)), {}).rows)
    state |= stored(
        reconcile(make_submission(("SERUM", 10), updated_at="2024-03-09T00:00:00Z"), state).rows
    )
    change = reconcile(make_submission(("SERUM", 10), updated_at="2024-03-10T00:00:00Z"), state)
    assert [row.sku for row in change.rows] == ["SERUM"]
    assert change.rollup == {}


def test_scored_answer_later_skipped_stops_counting_without_an_event() -> None:
    before = stored(reconcile(make_submission(("SERUM", 7)), {}).rows)
    change = reconcile(make_submission(("SERUM", None), updated_at="2024-03-09T00:00:00Z"), before)
    assert change.events == []
    assert change.rollup == {
        RollupKey("m-unit", 10, "SERUM", 5, date(2024, 3, 5)): NpsAggregate(0, -1, 0, -7)
    }


def test_skipped_answer_later_scored_is_published_as_new() -> None:
    before = stored(reconcile(make_submission(("SERUM", None)), {}).rows)
    [event] = reconcile(
        make_submission(("SERUM", 9), updated_at="2024-03-09T00:00:00Z"), before
    ).events
    assert (event.supersedes, event.previous_score, event.answer.category) == (
        False,
        None,
        "promoter",
    )


def test_change_of_manager_moves_the_rollup_cell() -> None:
    before = stored(reconcile(make_submission(("SERUM", 9)), {}).rows)
    change = reconcile(
        make_submission(("SERUM", 9), responsible_id=None, updated_at="2024-03-09T00:00:00Z"),
        before,
    )
    day = date(2024, 3, 5)
    assert change.rollup == {
        RollupKey("m-unit", 10, "SERUM", 5, day): NpsAggregate(-1, 0, 0, -9),
        RollupKey("m-unit", 10, "SERUM", NO_MANAGER, day): NpsAggregate(1, 0, 0, 9),
    }
    assert change.events[0].answer.responsible_id is None


def test_day_is_the_portal_local_day_of_submission() -> None:
    change = reconcile(make_submission(("SERUM", 9), submitted_at="2025-01-01T01:30:00+03:00"), {})
    assert change.rows[0].day == date(2025, 1, 1)
    [key] = change.rollup
    assert key.day == date(2025, 1, 1)


@pytest.mark.parametrize(
    ("scale", "score"), [("0-10", 11), ("0-10", -1), ("1-10", 0), ("binary", 7)]
)
def test_off_scale_score_names_item_product_and_score(scale: str, score: int) -> None:
    submission = make_submission(("SERUM", 1), ("MASK", score), item_id=42, scale=scale)
    with pytest.raises(SubmissionError, match=rf"item 42, product MASK: score {score} rejected"):
        reconcile(submission, {})


def test_product_answered_twice_is_rejected() -> None:
    expected = r"item 1: product\(s\) SERUM answered more than once"
    with pytest.raises(SubmissionError, match=expected):
        reconcile(make_submission(("SERUM", 9), ("SERUM", 3)), {})


def test_binary_scale() -> None:
    change = reconcile(make_submission(("LASER", 1), ("CRYO", 0), scale="binary"), {})
    assert [row.category for row in change.rows] == ["promoter", "detractor"]


def test_skipped_row_cannot_be_published() -> None:
    row = reconcile(make_submission(("SERUM", None)), {}).rows[0]
    with pytest.raises(ValueError, match="is skipped"):
        row.scored(PortalRef(member_id="m"))


def test_submission_event_id_is_the_source_of_every_row() -> None:
    submission = make_submission(("SERUM", 1), event_id=uuid.UUID(int=7))
    assert {row.source_event_id for row in reconcile(submission, {}).rows} == {uuid.UUID(int=7)}


@pytest.mark.parametrize("field", ["submitted_at", "updated_at"])
def test_submission_times_must_carry_their_offset(field: str) -> None:
    """The answer's day is the portal's local day: a time without an offset has none."""
    with pytest.raises(ValidationError) as caught:
        FormSubmitted.model_validate(
            make_submission(("A", 9)).model_dump(mode="json") | {field: "2024-03-05T10:00:00"}
        )
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert error["type"] == "timezone_aware"
