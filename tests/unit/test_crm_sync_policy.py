"""The legacy-safe contact patch policy, rule by rule (docs/crm_sync.md)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.crm_sync.policy import (
    Audit,
    Conflict,
    Effects,
    LedgerEntry,
    Outgoing,
    Owned,
    Repair,
    Role,
    Settled,
    Version,
    Write,
    canonical,
    conclude,
    contact_fields_for,
    date_value,
    history_entry,
    is_empty,
    merge,
    overwritten,
    plan_answer,
    plan_details,
    plan_patch,
    plan_repairs,
    same,
    settle_writes,
)
from shared.events import PortalRef, RouteAction, ScoredAnswer, WriteOutcome
from shared.portal_config import ContactFields, PortalConfig, parse_portal_config

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
    revision: int = 1,
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
            "revision": revision,
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
        pytest.param(answer(revision=1), answer(revision=2), id="one-answer-changed-in-a-second"),
        pytest.param(
            answer(item_id=77, sku="EQ-LASER-A", revision=5),
            answer(item_id=77, sku="EQ-LASER-B", revision=1),
            id="product-before-revision",
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
        pytest.param(answer(9, revision=2), answer(2, revision=1), id="changed-in-a-second-first"),
        pytest.param(answer(2, revision=1), answer(9, revision=2), id="changed-in-a-second-last"),
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


# --- the contact writer's steps -------------------------------------------------------------

V = Version.of(answer())
DAY = date_value(answer())
ENTRY = history_entry(answer())


def sent(field: str, base: Any, value: Any, before_ours: bool = False) -> Outgoing:
    return Outgoing(Write(field, base, value), before_ours)


def contact_action(category_id: int) -> RouteAction:
    the_answer = answer().model_copy(update={"category_id": category_id})
    return RouteAction(
        action_id="a", action="contact", rule="r", answer=the_answer, correlation_id="c"
    )


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        (
            12,
            ContactFields(
                score="UF_CRM_NPS_LASER_A",
                date="UF_CRM_NPS_LASER_A_DATE",
                history="UF_CRM_NPS_HISTORY",
            ),
        ),
        (10, None),
        (99, None),
    ],
    ids=["equipment", "cosmetics", "unknown category"],
)
def test_the_segment_decides_the_contact_fields(
    portal_config: PortalConfig, segment: int, expected: ContactFields | None
) -> None:
    assert contact_fields_for(contact_action(category_id=segment), portal_config) == expected


def test_an_equipment_segment_without_contact_fields_writes_no_contact(
    portal_config: PortalConfig,
) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    for segment in data["survey"]["segments"]:
        segment.pop("contact_fields", None)
    config = parse_portal_config(data)
    assert contact_fields_for(contact_action(category_id=12), config) is None


@pytest.mark.parametrize(
    ("current", "earlier", "audit", "owned", "sends"),
    [
        (
            {"UF_SCORE": "9"},
            [sent("UF_SCORE", None, "9")],
            [Audit("UF_SCORE", None, "9", "recovered", False)],
            [Owned("UF_SCORE", "9", V)],
            ["UF_DATE", "UF_LOG"],
        ),
        (
            {"UF_SCORE": "9"},
            [sent("UF_SCORE", "3", "9", before_ours=True)],
            [Audit("UF_SCORE", "3", "9", "recovered", True)],
            [Owned("UF_SCORE", "9", V)],
            ["UF_DATE", "UF_LOG"],
        ),
        (
            {"UF_SCORE": "5 (by hand)"},
            [sent("UF_SCORE", None, "9")],
            [],
            [],
            ["UF_DATE", "UF_LOG"],
        ),
        (
            {},
            [sent("UF_SCORE", None, "9")],
            [],
            [],
            ["UF_SCORE", "UF_DATE", "UF_LOG"],
        ),
        (
            {"UF_LOG": [ENTRY]},
            [sent("UF_LOG", None, [ENTRY])],
            [Audit("UF_LOG", None, [ENTRY], "recovered", False)],
            [],
            ["UF_SCORE", "UF_DATE"],
        ),
        (
            {"UF_OTHER": "9"},
            [sent("UF_OTHER", None, "9")],
            [],
            [],
            ["UF_SCORE", "UF_DATE", "UF_LOG"],
        ),
    ],
    ids=[
        "a sent score that shows is ours",
        "the audit keeps whether the value replaced was ours",
        "a sent score replaced since is not claimed",
        "a sent write that does not show did not happen",
        "a sent history entry is audited and not appended again",
        "a field no longer mapped is not recovered",
    ],
)
def test_writes_an_earlier_attempt_sent_are_recovered_before_deciding(
    current: dict[str, Any],
    earlier: list[Outgoing],
    audit: list[Audit],
    owned: list[Owned],
    sends: list[str],
) -> None:
    step = plan_answer(FIELDS, answer(), current, {}, earlier)
    assert step.effects == Effects(audit=tuple(audit), owned=tuple(owned))
    assert [send.write.field for send in step.sends] == sends


def test_a_recovered_score_is_owned_when_the_answer_is_decided_afresh() -> None:
    step = plan_answer(FIELDS, answer(), {"UF_SCORE": "9"}, {}, [sent("UF_SCORE", None, "9")])
    decision = step.plan.decision("UF_SCORE")
    assert decision is not None
    assert (decision.verdict, decision.owned_after) == ("keep", "9")


@pytest.mark.parametrize(
    ("current", "ledger", "sends"),
    [
        (
            {},
            {},
            [
                sent("UF_SCORE", None, "9"),
                sent("UF_DATE", None, DAY),
                sent("UF_LOG", None, [ENTRY]),
            ],
        ),
        (
            {"UF_SCORE": "3", "UF_DATE": "2025-02-12", "UF_LOG": ["x"]},
            {"UF_SCORE": ours("3"), "UF_DATE": ours("2025-02-12")},
            [
                sent("UF_SCORE", "3", "9", before_ours=True),
                sent("UF_DATE", "2025-02-12", DAY, before_ours=True),
                sent("UF_LOG", ["x"], ["x", ENTRY]),
            ],
        ),
        (
            {"UF_SCORE": "7 (by hand)", "UF_DATE": DAY, "UF_LOG": [ENTRY]},
            {},
            [],
        ),
    ],
    ids=["empty fields", "our values and a list", "nothing to write"],
)
def test_an_answer_sends_its_writes_with_whose_value_they_replace(
    current: dict[str, Any], ledger: dict[str, LedgerEntry], sends: list[Outgoing]
) -> None:
    step = plan_answer(FIELDS, answer(), current, ledger)
    assert list(step.sends) == sends
    assert step.effects == Effects()


RESTORE = Repair("UF_SCORE", written="9", target="7 (called)", displaced="7 (called)")
MERGE = Repair("UF_LOG", written=["a", "e"], target=["a", "x", "e"], displaced=["a", "x"])


@pytest.mark.parametrize(
    ("repairs", "current", "earlier", "sends", "audit"),
    [
        ([RESTORE], {"UF_SCORE": "9"}, [], [sent("UF_SCORE", "9", "7 (called)", True)], []),
        ([RESTORE], {"UF_SCORE": "8 (second edit)"}, [], [], []),
        ([RESTORE], {"UF_SCORE": "7 (called)"}, [], [], []),
        (
            [RESTORE, MERGE],
            {"UF_SCORE": "9", "UF_LOG": ["a", "e"]},
            [],
            [
                sent("UF_SCORE", "9", "7 (called)", True),
                sent("UF_LOG", ["a", "e"], ["a", "x", "e"], True),
            ],
            [],
        ),
        (
            [RESTORE],
            {"UF_SCORE": "7 (called)"},
            [sent("UF_SCORE", "9", "7 (called)", True)],
            [],
            [Audit("UF_SCORE", "9", "7 (called)", "restore", True)],
        ),
        (
            [RESTORE],
            {"UF_SCORE": "9"},
            [sent("UF_SCORE", "9", "7 (called)", True)],
            [sent("UF_SCORE", "9", "7 (called)", True)],
            [],
        ),
    ],
    ids=[
        "a scalar gets the person's value back",
        "a field changed again is left alone",
        "a field already showing the person's value needs nothing",
        "a list gets the person's entries plus ours",
        "a restore an earlier attempt sent is audited",
        "a restore an earlier attempt did not get to is sent",
    ],
)
def test_repairs_put_back_what_a_person_set_while_we_wrote(
    repairs: list[Repair],
    current: dict[str, Any],
    earlier: list[Outgoing],
    sends: list[Outgoing],
    audit: list[Audit],
) -> None:
    step = plan_repairs(repairs, current, earlier)
    assert list(step.sends) == sends
    assert step.effects == Effects(audit=tuple(audit))


SCORE_ONLY = ContactFields(score="UF_SCORE")


@pytest.mark.parametrize(
    ("current", "ledger", "clobbered", "owned", "conflicts"),
    [
        (None, {}, False, [Owned("UF_SCORE", "9", V)], []),
        (None, {}, True, [Owned("UF_SCORE", None, V)], []),
        ("3", {"UF_SCORE": ours("3")}, False, [Owned("UF_SCORE", "9", V)], []),
        ("3", {"UF_SCORE": ours("3")}, True, [Owned("UF_SCORE", "3", V)], []),
        ("9", {}, False, [Owned("UF_SCORE", None, V)], []),
        ("9", {"UF_SCORE": ours("9")}, False, [Owned("UF_SCORE", "9", V)], []),
        (
            "7/10",
            {},
            False,
            [Owned("UF_SCORE", None, V)],
            [Conflict("UF_SCORE", "legacy", "7/10", "9")],
        ),
        (
            "5",
            {"UF_SCORE": ours("3")},
            False,
            [Owned("UF_SCORE", "3", V)],
            [Conflict("UF_SCORE", "hand_edited", "5", "9")],
        ),
        ("3", {"UF_SCORE": ours("3", NEWER)}, False, [], []),
    ],
    ids=[
        "an empty field written is ours",
        "an empty field a person filled meanwhile is not",
        "our value replaced is ours",
        "our value a person replaced meanwhile: the old one stays ours",
        "a legacy value equal to the answer is not claimed",
        "our value equal to the answer stays ours",
        "a legacy value is a conflict",
        "our value edited by hand is a conflict",
        "a stale answer moves nothing",
    ],
)
def test_a_plan_concludes_in_the_ledger_and_conflicts(
    current: Any,
    ledger: dict[str, LedgerEntry],
    clobbered: bool,
    owned: list[Owned],
    conflicts: list[Conflict],
) -> None:
    the_plan = plan_patch(SCORE_ONLY, answer(), {"UF_SCORE": current}, ledger)
    effects = conclude(the_plan, frozenset({"UF_SCORE"}) if clobbered else frozenset())
    assert effects == Effects(owned=tuple(owned), conflicts=tuple(conflicts))


LOG_FIELDS = ContactFields(score="UF_SCORE", history="UF_LOG")
BEFORE = {"UF_SCORE": None, "UF_LOG": ["a"]}
ROLES: dict[str, Role] = {"UF_SCORE": "score", "UF_LOG": "history"}


def settle_answer(seen: dict[str, Any] | None) -> Settled:
    step = plan_answer(LOG_FIELDS, answer(), BEFORE, {})
    return settle_writes(
        step.sends,
        seen,
        plan=step.plan,
        roles=ROLES,
        outcome=step.plan.outcome(),
        details=plan_details(step.plan, 5),
    )


@pytest.mark.parametrize(
    ("seen", "repaired", "outcome", "edited", "owned"),
    [
        (None, [], "patched", [], "9"),
        ({"UF_SCORE": None, "UF_LOG": ["a"]}, [], "patched", [], "9"),
        ({"UF_SCORE": "9.0", "UF_LOG": ["a"]}, [], "patched", [], "9"),
        (
            {"UF_SCORE": "7 (called)", "UF_LOG": ["a"]},
            ["UF_SCORE"],
            "conflict",
            [Conflict("UF_SCORE", "edited_during_write", "7 (called)", "9")],
            None,
        ),
        ({"UF_SCORE": None, "UF_LOG": ["a", "x"]}, ["UF_LOG"], "patched", [], "9"),
        (
            {"UF_SCORE": "7 (called)", "UF_LOG": []},
            ["UF_LOG", "UF_SCORE"],
            "conflict",
            [Conflict("UF_SCORE", "edited_during_write", "7 (called)", "9")],
            None,
        ),
    ],
    ids=[
        "the verify read failed: taken as decided",
        "nothing changed in between",
        "the person typed our value",
        "a score edited in between is a conflict and is put back",
        "a list edited in between is merged without a conflict",
        "both edited in between",
    ],
)
def test_the_verify_read_decides_what_a_write_did(
    seen: dict[str, Any] | None,
    repaired: list[str],
    outcome: str,
    edited: list[Conflict],
    owned: Any,
) -> None:
    settled = settle_answer(seen)
    before = seen or BEFORE
    assert settled.effects.audit == (
        Audit("UF_SCORE", before["UF_SCORE"], "9", "answer", False),
        Audit("UF_LOG", before["UF_LOG"], ["a", ENTRY], "answer", False),
    )
    assert sorted(r.field for r in settled.repairs) == repaired
    assert settled.outcome == outcome
    assert settled.effects.conflicts == tuple(edited)
    assert settled.effects.owned == (Owned("UF_SCORE", owned, V),)
    assert settled.details.get("repaired", []) == repaired
    assert settled.details["conflicts"] == [{"field": c.field, "reason": c.reason} for c in edited]


RESTORED = sent("UF_SCORE", "9", "7 (called)", before_ours=True)
MERGED = sent("UF_LOG", ["a", "e"], ["a", "x", "e"], before_ours=True)


@pytest.mark.parametrize(
    ("restore", "roles", "seen", "repaired", "conflicts", "outcome"),
    [
        (RESTORED, ROLES, "9", False, [], "conflict"),
        (RESTORED, ROLES, "7 (called)", False, [], "conflict"),
        (
            RESTORED,
            ROLES,
            "8 (second edit)",
            True,
            [Conflict("UF_SCORE", "edited_during_write", "8 (second edit)", None)],
            "conflict",
        ),
        (
            RESTORED,
            {},
            "8 (second edit)",
            True,
            [Conflict("UF_SCORE", "edited_during_write", "8 (second edit)", None)],
            "conflict",
        ),
        (MERGED, ROLES, ["a", "e", "y"], True, [], "patched"),
    ],
    ids=[
        "a restore that went through",
        "the person set their value again",
        "a scalar edited again during the restore",
        "a field the answer no longer maps counts as a scalar",
        "a list edited again is merged once more, without a conflict",
    ],
)
def test_restores_are_audited_and_repaired_again_when_edited_again(
    restore: Outgoing,
    roles: dict[str, Role],
    seen: Any,
    repaired: bool,
    conflicts: list[Conflict],
    outcome: WriteOutcome,
) -> None:
    field, value = restore.write.field, restore.write.value
    settled = settle_writes(
        [restore],
        {field: seen},
        plan=None,
        roles=roles,
        outcome="patched" if field == "UF_LOG" else "conflict",
        details={"repaired": [field]},
    )
    assert settled.effects.audit == (Audit(field, seen, value, "restore", True),)
    assert settled.effects.owned == ()
    assert settled.effects.conflicts == tuple(conflicts)
    assert settled.outcome == outcome
    assert [r.field for r in settled.repairs] == ([field] if repaired else [])


@pytest.mark.parametrize(
    ("current", "ledger", "details"),
    [
        (
            {},
            {},
            {
                "written": {"UF_SCORE": "9", "UF_DATE": DAY},
                "appended": {"UF_LOG": ENTRY},
                "kept": {},
                "conflicts": [],
                "stale": False,
            },
        ),
        (
            {"UF_SCORE": "7/10", "UF_DATE": DAY, "UF_LOG": [ENTRY]},
            {},
            {
                "written": {},
                "appended": {},
                "kept": {"UF_DATE": "same_value", "UF_LOG": "already_logged"},
                "conflicts": [{"field": "UF_SCORE", "reason": "legacy"}],
                "stale": False,
            },
        ),
        (
            {},
            {"UF_SCORE": ours("10", NEWER)},
            {"written": {}, "appended": {}, "kept": {}, "conflicts": [], "stale": True},
        ),
    ],
    ids=["written and appended", "kept and conflicts", "stale"],
)
def test_the_event_details_say_what_the_plan_did(
    current: dict[str, Any], ledger: dict[str, LedgerEntry], details: dict[str, Any]
) -> None:
    the_plan = plan_patch(FIELDS, answer(), current, ledger)
    assert plan_details(the_plan, 5) == {"contact_id": 5, **details}
