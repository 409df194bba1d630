"""The legacy-safe contact patch policy, rule by rule (docs/crm_sync.md)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.crm_sync.policy import (
    LedgerEntry,
    Repair,
    Version,
    Write,
    canonical,
    date_value,
    history_entry,
    is_empty,
    merge,
    overwritten,
    plan_patch,
    same,
)
from shared.events import PortalRef, ScoredAnswer
from shared.portal_config import ContactFields

MSK = timezone(timedelta(hours=3))
SUBMITTED = datetime(2025, 3, 14, 10, 30, tzinfo=MSK)
FIELDS = ContactFields(score="UF_SCORE", date="UF_DATE", history="UF_LOG")


def answer(
    score: int = 9,
    *,
    submitted: datetime = SUBMITTED,
    updated: datetime | None = None,
    item_id: int = 77,
    sku: str = "EQ-LASER-A",
    scale: str = "0-10",
) -> ScoredAnswer:
    return ScoredAnswer.model_validate(
        {
            "answer_id": f"p:{item_id}:{sku}",
            "portal": PortalRef(member_id="p"),
            "entity_type_id": 1038,
            "item_id": item_id,
            "category_id": 12,
            "segment": "Laser A",
            "kind": "equipment",
            "sku": sku,
            "product_name": "Laser A",
            "scale": scale,
            "score": score,
            "category": "promoter" if score >= 9 else "detractor",
            "contact_id": 5,
            "submitted_at": submitted,
            "updated_at": updated or submitted,
        }
    )


OLDER = answer(3, submitted=SUBMITTED - timedelta(days=30), item_id=60)
NEWER = answer(10, submitted=SUBMITTED + timedelta(days=30), item_id=90)


def ours(value: Any, by: ScoredAnswer = OLDER) -> LedgerEntry:
    return LedgerEntry(Version.of(by), owned_value=value)


def plan(
    current: dict[str, Any],
    ledger: dict[str, LedgerEntry] | None = None,
    the_answer: ScoredAnswer | None = None,
    fields: ContactFields = FIELDS,
) -> Any:
    return plan_patch(fields, the_answer or answer(), current, ledger or {})


# --- comparing values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ("9", "9", True),
        ("9", "9.0", True),
        (9, "9", True),
        (9.5, "9.50", True),
        (" 9 ", "9", True),
        ("9", "9/10", False),
        ("0", None, False),
        (0, "", False),
        (None, "", True),
        (False, None, True),
        ([], None, True),
        ([""], None, True),
        ("2025-03-14", "2025-03-14T00:00:00+03:00", True),
        ("2025-03-14", "2025-03-14 00:00:00", True),
        ("2025-03-14", "14.03.2025", True),
        ("2025-03-14", "2025-03-14T10:00:00+03:00", False),
        ("2025-03-14", "2025-03-15", False),
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["b", "a"], False),
        (["a"], ["a", "a"], False),
        ("оценка 9", "оценка 9", True),
    ],
)
def test_values_compare_as_a_person_reads_them(left: Any, right: Any, equal: bool) -> None:
    assert same(left, right) is equal
    assert (canonical(left) == canonical(right)) is equal


@pytest.mark.parametrize(
    ("value", "empty"),
    [
        (None, True),
        ("", True),
        ("  ", True),
        (False, True),
        ([], True),
        ({}, True),
        ("0", False),
        (0, False),
        (["x"], False),
        ("-", False),
    ],
)
def test_what_counts_as_empty(value: Any, empty: bool) -> None:
    assert is_empty(value) is empty


# --- rule 1: only the mapped fields, only what changes -------------------------------------


def test_only_mapped_fields_are_ever_decided_and_written() -> None:
    result = plan({"UF_SCORE": None, "UF_OTHER": "x", "NAME": "Anna"})
    assert {d.field for d in result.decisions} == {"UF_SCORE", "UF_DATE", "UF_LOG"}
    assert {w.field for w in result.writes()} <= {"UF_SCORE", "UF_DATE", "UF_LOG"}


def test_without_optional_fields_only_the_score_is_decided() -> None:
    result = plan({}, fields=ContactFields(score="UF_SCORE"))
    assert [(w.field, w.value) for w in result.writes()] == [("UF_SCORE", "9")]


def test_fields_already_showing_the_answer_are_not_sent() -> None:
    current: dict[str, Any] = {
        "UF_SCORE": "9.0",
        "UF_DATE": "2025-03-14T00:00:00+03:00",
        "UF_LOG": [history_entry(answer())],
    }
    ledger = {"UF_SCORE": ours("9", answer()), "UF_DATE": ours("2025-03-14", answer())}
    result = plan(current, ledger)
    assert result.writes() == ()
    assert result.outcome() == "unchanged"
    assert {d.reason for d in result.decisions} == {"same_value", "already_logged"}


# --- rule 2: empty → write; ours → newer replaces; anything else → conflict ----------------


@pytest.mark.parametrize("empty", [None, "", False, []])
def test_an_empty_field_is_written(empty: Any) -> None:
    result = plan({"UF_SCORE": empty, "UF_DATE": empty, "UF_LOG": empty})
    score = result.decision("UF_SCORE")
    assert score is not None
    assert (score.verdict, score.reason, score.value, score.owned_after) == (
        "write",
        "empty",
        "9",
        "9",
    )
    assert [(w.field, w.value) for w in result.writes()] == [
        ("UF_SCORE", "9"),
        ("UF_DATE", "2025-03-14"),
        ("UF_LOG", [history_entry(answer())]),
    ]
    assert result.outcome() == "patched"


def test_an_empty_field_we_owned_before_is_written_again() -> None:
    result = plan({"UF_SCORE": None}, {"UF_SCORE": ours("3")})
    score = result.decision("UF_SCORE")
    assert score is not None
    assert (score.verdict, score.reason, score.before_ours) == ("write", "empty", False)


def test_our_own_value_is_replaced_by_a_newer_answer() -> None:
    current = {"UF_SCORE": "3", "UF_DATE": "2025-02-12T00:00:00+03:00", "UF_LOG": []}
    ledger = {"UF_SCORE": ours("3"), "UF_DATE": ours("2025-02-12")}
    result = plan(current, ledger)
    for field, value in (("UF_SCORE", "9"), ("UF_DATE", "2025-03-14")):
        decision = result.decision(field)
        assert decision is not None
        assert (decision.verdict, decision.reason, decision.value) == ("write", "ours", value)
        assert decision.before_ours is True
        assert decision.owned_after == value
    assert result.outcome() == "patched"


@pytest.mark.parametrize("legacy", ["9/10", "оценка 7", "7 (звонок)", "0", 8.5, "-"])
def test_a_legacy_value_is_never_overwritten(legacy: Any) -> None:
    result = plan({"UF_SCORE": legacy, "UF_DATE": None, "UF_LOG": None})
    score = result.decision("UF_SCORE")
    assert score is not None
    assert (score.verdict, score.reason, score.value, score.owned_after) == (
        "conflict",
        "legacy",
        None,
        None,
    )
    assert "UF_SCORE" not in {w.field for w in result.writes()}
    assert result.outcome() == "conflict"


def test_a_legacy_value_equal_to_the_answer_is_kept_and_not_claimed() -> None:
    result = plan({"UF_SCORE": "9"})
    score = result.decision("UF_SCORE")
    assert score is not None
    assert (score.verdict, score.reason, score.owned_after) == ("keep", "same_value", None)


def test_a_value_of_ours_edited_by_hand_is_a_conflict_and_kept() -> None:
    result = plan({"UF_SCORE": "4 - called back"}, {"UF_SCORE": ours("3")})
    score = result.decision("UF_SCORE")
    assert score is not None
    assert (score.verdict, score.reason, score.owned_after) == ("conflict", "hand_edited", "3")


def test_a_conflict_on_the_score_still_logs_the_answer_in_history() -> None:
    result = plan({"UF_SCORE": "оценка 7", "UF_DATE": "2020-01-01", "UF_LOG": ["old entry"]})
    assert [d.verdict for d in result.decisions] == ["conflict", "conflict", "write"]
    history = result.decision("UF_LOG")
    assert history is not None
    assert history.value == ["old entry", history_entry(answer())]
    assert result.outcome() == "conflict"


def test_fields_are_decided_one_by_one() -> None:
    result = plan({"UF_SCORE": "оценка 7", "UF_DATE": None, "UF_LOG": None})
    assert [d.verdict for d in result.decisions] == ["conflict", "write", "write"]


# --- rule 3: an older answer never replaces a newer one ------------------------------------


def test_an_older_answer_is_ignored_as_a_whole() -> None:
    ledger = {"UF_SCORE": ours("10", NEWER), "UF_DATE": ours("2025-04-13", NEWER)}
    result = plan({"UF_SCORE": "10", "UF_DATE": "2025-04-13", "UF_LOG": []}, ledger)
    assert result.stale
    assert {(d.verdict, d.reason) for d in result.decisions} == {("stale", "older_answer")}
    assert result.writes() == ()
    assert result.ledger_updates() == ()
    assert result.outcome() == "skipped"


def test_an_older_answer_is_ignored_even_when_the_field_was_emptied() -> None:
    ledger = {"UF_SCORE": ours("10", NEWER)}
    assert plan({"UF_SCORE": None}, ledger).stale


def test_an_older_answer_is_ignored_after_a_newer_one_conflicted() -> None:
    ledger = {"UF_SCORE": LedgerEntry(Version.of(NEWER), owned_value=None)}
    assert plan({"UF_SCORE": "оценка 7"}, ledger).stale


def test_a_later_edit_of_the_same_answer_is_newer() -> None:
    edited = answer(4, updated=SUBMITTED + timedelta(hours=2))
    ledger = {"UF_SCORE": ours("9", answer())}
    result = plan({"UF_SCORE": "9"}, ledger, edited)
    assert not result.stale
    score = result.decision("UF_SCORE")
    assert score is not None
    assert (score.verdict, score.value) == ("write", "4")


def test_the_original_version_is_stale_after_its_edit() -> None:
    edited = answer(4, updated=SUBMITTED + timedelta(hours=2))
    assert plan({"UF_SCORE": "4"}, {"UF_SCORE": ours("4", edited)}, answer()).stale


LATER = SUBMITTED + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        pytest.param(answer(item_id=90), answer(item_id=60, submitted=LATER), id="submitted"),
        pytest.param(
            answer(item_id=90, submitted=LATER),
            answer(item_id=60, submitted=SUBMITTED + timedelta(days=1)),
            id="submitted-days-apart",
        ),
        pytest.param(
            answer(item_id=90, submitted=datetime(2025, 3, 14, 13, 30, tzinfo=MSK)),
            answer(item_id=60, submitted=datetime(2025, 3, 14, 10, 30, 1, tzinfo=UTC)),
            id="submitted-instant-not-wall-clock",
        ),
        pytest.param(
            answer(item_id=90), answer(item_id=60, updated=LATER), id="same-submitted-updated"
        ),
        pytest.param(answer(item_id=77), answer(item_id=78), id="same-times-item-id"),
        pytest.param(answer(item_id=9), answer(item_id=10), id="same-times-9-before-10"),
        pytest.param(answer(item_id=99), answer(item_id=100), id="same-times-99-before-100"),
        pytest.param(answer(item_id=2), answer(item_id=19), id="same-times-2-before-19"),
        pytest.param(answer(item_id=999_999), answer(item_id=1_000_000), id="same-times-longer-id"),
        pytest.param(
            answer(item_id=77, sku="EQ-CRYO-B"),
            answer(item_id=77, sku="EQ-LASER-A"),
            id="same-item-products",
        ),
        pytest.param(
            answer(item_id=77, sku="EQ-LASER-A"),
            answer(item_id=77, sku="EQ-LASER-a"),
            id="same-item-products-by-code-point",
        ),
        pytest.param(
            answer(item_id=10, sku="A"), answer(item_id=11, sku="Z"), id="item-before-product"
        ),
    ],
)
def test_versions_order_by_submitted_updated_item_id_then_product(
    earlier: ScoredAnswer, later: ScoredAnswer
) -> None:
    assert Version.of(earlier) < Version.of(later)
    assert max(Version.of(later), Version.of(earlier)) == Version.of(later)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(answer(9, item_id=10), answer(2, item_id=9), id="later-item-first"),
        pytest.param(answer(2, item_id=9), answer(9, item_id=10), id="earlier-item-first"),
        pytest.param(
            answer(9, item_id=10, updated=LATER), answer(2, item_id=11), id="later-edit-first"
        ),
        pytest.param(
            answer(2, item_id=11), answer(9, item_id=10, updated=LATER), id="later-edit-last"
        ),
    ],
)
def test_a_tie_on_submission_settles_on_the_later_answer_in_any_order(
    first: ScoredAnswer, second: ScoredAnswer
) -> None:
    later = max(first, second, key=Version.of)
    assert later.score == 9
    assert settle([first, second]) == ("9", Version.of(later))


def settle(arrivals: list[ScoredAnswer]) -> tuple[Any, Version]:
    """The score field and its ledger version once `arrivals` were decided one after another
    (the field starts empty; every write lands)."""
    current: dict[str, Any] = {"UF_SCORE": None}
    ledger: dict[str, LedgerEntry] = {}
    for the_answer in arrivals:
        result = plan(current, ledger, the_answer, ContactFields(score="UF_SCORE"))
        for write in result.writes():
            current[write.field] = write.value
        for decision in result.ledger_updates():
            ledger[decision.field] = LedgerEntry(result.version, decision.owned_after)
    return current["UF_SCORE"], ledger["UF_SCORE"].version


ITEM_TIMES = st.tuples(st.integers(0, 1), st.integers(0, 1))
"""An item's submitted and updated time, in seconds after SUBMITTED: ties are the rule."""


@given(
    st.dictionaries(
        st.sampled_from([2, 9, 10, 19, 99, 100, 1000]),
        st.tuples(ITEM_TIMES, st.sets(st.sampled_from(["EQ-A", "EQ-LASER-A", "EQ-a"]), min_size=1)),
        min_size=1,
    ),
    st.randoms(use_true_random=False),
)
def test_any_order_of_arrival_settles_on_the_newest_answer(
    items: dict[int, tuple[tuple[int, int], set[str]]], rng: random.Random
) -> None:
    answers = [
        answer(
            (item_id + len(sku)) % 11,
            item_id=item_id,
            sku=sku,
            submitted=SUBMITTED + timedelta(seconds=submitted),
            updated=SUBMITTED + timedelta(seconds=submitted + updated),
        )
        for item_id, ((submitted, updated), skus) in items.items()
        for sku in skus
    ]
    newest = max(answers, key=lambda a: (a.submitted_at, a.updated_at, a.item_id, a.sku))
    rng.shuffle(answers)
    assert settle(answers) == (str(newest.score), Version.of(newest))


def test_the_same_answer_again_is_not_stale() -> None:
    ledger = {"UF_SCORE": ours("9", answer()), "UF_DATE": ours("2025-03-14", answer())}
    current = {"UF_SCORE": "9", "UF_DATE": "2025-03-14", "UF_LOG": [history_entry(answer())]}
    result = plan(current, ledger)
    assert not result.stale
    assert result.outcome() == "unchanged"


def test_every_decision_of_a_fresh_answer_moves_the_ledger() -> None:
    result = plan({"UF_SCORE": "оценка 7", "UF_DATE": None, "UF_LOG": None})
    assert [d.field for d in result.ledger_updates()] == ["UF_SCORE", "UF_DATE"]


# --- rule 4: multiple fields are append-only -----------------------------------------------


def test_history_gets_the_full_list_plus_one_entry() -> None:
    existing = ["2019-05-01 Laser A: 7 (phone survey)", "2021-11-20 Laser A: 8 (exhibition)"]
    result = plan({"UF_LOG": existing})
    history = result.decision("UF_LOG")
    assert history is not None
    assert history.value == [*existing, history_entry(answer())]
    assert history.value[: len(existing)] == existing


def test_history_entry_already_there_is_not_appended_twice() -> None:
    existing = ["x", history_entry(answer()), "y"]
    history = plan({"UF_LOG": existing}).decision("UF_LOG")
    assert history is not None
    assert (history.verdict, history.reason) == ("keep", "already_logged")


def test_history_that_is_not_a_list_is_left_alone() -> None:
    history = plan({"UF_LOG": "one hand-written line"}).decision("UF_LOG")
    assert history is not None
    assert (history.verdict, history.reason, history.value) == ("conflict", "not_a_list", None)


def test_history_entries_name_day_product_score_and_item() -> None:
    assert history_entry(answer()) == "2025-03-14 Laser A: 9/10 (NPS survey, item 77)"
    binary = answer(1, scale="binary")
    assert history_entry(binary) == "2025-03-14 Laser A: satisfied (NPS survey, item 77)"


def test_the_date_is_the_answers_own_day() -> None:
    late = answer(submitted=datetime(2025, 3, 14, 23, 30, tzinfo=MSK))
    assert date_value(late) == "2025-03-14"
    assert date_value(answer(submitted=datetime(2025, 3, 14, 23, 30, tzinfo=UTC))) == "2025-03-14"


# --- the race: a manual edit between our read and our write --------------------------------


def test_no_repair_when_nothing_changed_in_between() -> None:
    assert overwritten(Write("UF_SCORE", None, "9"), None) is None
    assert overwritten(Write("UF_LOG", ["a"], ["a", "e"]), ["a"]) is None


def test_no_repair_when_the_person_typed_our_value() -> None:
    assert overwritten(Write("UF_SCORE", None, "9"), "9.0") is None
    assert overwritten(Write("UF_LOG", ["a"], ["a", "e"]), ["a", "e"]) is None


def test_a_scalar_edited_in_between_is_put_back() -> None:
    repair = overwritten(Write("UF_SCORE", None, "9"), "7 (called)")
    assert repair == Repair("UF_SCORE", written="9", target="7 (called)", displaced="7 (called)")
    assert repair.write_for("9") == Write("UF_SCORE", "9", "7 (called)")


def test_a_repair_never_touches_a_field_changed_again() -> None:
    repair = Repair("UF_SCORE", written="9", target="7 (called)", displaced="7 (called)")
    assert repair.write_for("8 (second edit)") is None
    assert repair.write_for("7 (called)") is None


def test_history_edited_in_between_keeps_every_entry() -> None:
    repair = overwritten(Write("UF_LOG", ["a"], ["a", "e"]), ["a", "x"])
    assert repair is not None
    assert repair.target == ["a", "x", "e"]
    assert repair.write_for(["a", "e"]) == Write("UF_LOG", ["a", "e"], ["a", "x", "e"])


def test_history_entry_deleted_in_between_stays_deleted() -> None:
    repair = overwritten(Write("UF_LOG", ["a", "b"], ["a", "b", "e"]), ["b"])
    assert repair is not None
    assert repair.target == ["b", "e"]


def test_history_repair_rebases_on_later_appends() -> None:
    repair = Repair("UF_LOG", written=["a", "e"], target=["a", "x", "e"], displaced=["a", "x"])
    write = repair.write_for(["a", "e", "y"])
    assert write is not None
    assert sorted(write.value) == ["a", "e", "x", "y"]
    assert write.value[:3] == ["a", "e", "y"]


def test_repairs_survive_a_round_trip_through_json() -> None:
    repair = Repair("UF_LOG", written=["a", "e"], target=["a", "x", "e"], displaced=["a", "x"])
    assert Repair.from_json(repair.to_json()) == repair


@pytest.mark.parametrize(
    ("base", "ours_", "theirs", "merged"),
    [
        ("1", "9", "1", "9"),
        ("1", "9", "5", "5"),
        (None, "9", "5", "5"),
        ([], ["e"], [], ["e"]),
        ([], ["e"], None, ["e"]),
        (["a"], ["a", "e"], ["a", "x"], ["a", "x", "e"]),
        (["a"], ["a", "e"], ["a", "e"], ["a", "e"]),
        (["a"], ["a", "e"], [], ["e"]),
        (["a", "a"], ["a", "a", "e"], ["a"], ["a", "e"]),
        (["a"], ["a", "e"], "a string", "a string"),
    ],
)
def test_three_way_merge(base: Any, ours_: Any, theirs: Any, merged: Any) -> None:
    assert merge(base, ours_, theirs) == merged
