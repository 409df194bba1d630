"""The item → answer mapping, table by table (pure: no portal, no broker, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.mapping import (
    SCALE_BOUNDS,
    Answer,
    AnswerError,
    NotASurvey,
    UnknownListItemError,
    map_item,
    read_flag,
    read_score,
    read_time,
)
from shared.events import (
    Event,
    FormSubmitted,
    PortalRef,
    ProductAnswer,
    Scale,
    SubmittedAnswer,
    WebhookReceived,
)
from shared.portal_config import PortalConfig, load_portal_config

CONFIG = load_portal_config(Path(__file__).resolve().parents[2] / "config/portal.example.yaml")
CRYO_ENUM = {"UF_CRM_5_CRYO_SCORE": {str(2101 + n): str(n) for n in range(11)}}
MSK = timezone(timedelta(hours=3))


def with_scale(scale: Scale) -> PortalConfig:
    return CONFIG.model_copy(update={"nps": CONFIG.nps.model_copy(update={"scale": scale})})


def item(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 41,
        "entityTypeId": 1038,
        "categoryId": 12,
        "contactId": 7,
        "assignedById": 31,
        "createdTime": "2024-07-22T18:00:08+03:00",
        "updatedTime": "2024-07-22T18:05:00+03:00",
        "UF_CRM_5_COMMENT": "  Works well  ",
        "UF_CRM_5_TO_SERVICE": "N",
        "UF_CRM_5_SCORE": 9,
    }
    base.update(values)
    return base


def cosmetics(**values: Any) -> dict[str, Any]:
    return item(categoryId=10, UF_CRM_5_SCORE=None, **values)


def test_equipment_item_maps_to_one_answer_with_everything() -> None:
    answer = map_item(item(), CONFIG, {})
    assert not isinstance(answer, NotASurvey)
    assert answer.answers == (ProductAnswer(sku="EQ-LASER-A", name="Laser A", score=9),)
    assert (answer.item_id, answer.category_id, answer.segment, answer.kind) == (
        41,
        12,
        "Laser A",
        "equipment",
    )
    assert (answer.contact_id, answer.responsible_id) == (7, 31)
    assert answer.comment == "Works well"
    assert answer.service_request is False
    assert answer.scale == "0-10"
    assert answer.submitted_at == datetime(2024, 7, 22, 18, 0, 8, tzinfo=MSK)
    assert answer.updated_at == datetime(2024, 7, 22, 18, 5, 0, tzinfo=MSK)


def test_the_event_is_built_from_the_answer_with_every_field() -> None:
    answer = map_item(item(UF_CRM_5_TO_SERVICE="Y"), CONFIG, {})
    assert isinstance(answer, Answer)
    cause = WebhookReceived(
        correlation_id="c-1",
        portal=PortalRef(member_id="m-1"),
        source="event",
        event="ONCRMDYNAMICITEMUPDATE",
        entity_type_id=1038,
        item_id=41,
    )
    form = FormSubmitted.of(answer, portal=cause.portal, **cause.caused("form", "x"))
    assert form.model_dump(include=set(SubmittedAnswer.model_fields)) == answer.model_dump()
    assert (form.portal, form.correlation_id, form.causation_id) == (
        cause.portal,
        "c-1",
        str(cause.event_id),
    )
    # The event declares no answer field of its own: each one is the answer's.
    assert set(FormSubmitted.model_fields) == (
        set(SubmittedAnswer.model_fields) | set(Event.model_fields) | {"portal"}
    )


def test_an_answer_managed_by_someone_else_keeps_the_rest() -> None:
    answer = map_item(item(), CONFIG, {})
    assert isinstance(answer, Answer)
    managed = answer.managed_by(43)
    assert managed.responsible_id == 43
    assert managed.model_dump(exclude={"responsible_id"}) == answer.model_dump(
        exclude={"responsible_id"}
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Works well  ", "Works well"),
        ("Broke\x00 down", "Broke down"),
        ("\x00", None),
        (["first", "", "second"], "first\nsecond"),
        ("   ", None),
    ],
)
def test_comment_is_trimmed_and_holds_no_nul(raw: object, expected: str | None) -> None:
    answer = map_item(item(UF_CRM_5_COMMENT=raw), CONFIG, {})
    assert not isinstance(answer, NotASurvey)
    assert answer.comment == expected


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("Y", True),
        ("N", False),
        (True, True),
        (False, False),
        ("1", True),
        (0, False),
        (None, False),
    ],
)
def test_service_request_checkbox(flag: object, expected: bool) -> None:
    answer = map_item(item(UF_CRM_5_TO_SERVICE=flag), CONFIG, {})
    assert not isinstance(answer, NotASurvey)
    assert answer.service_request is expected


def test_cosmetics_one_answer_per_ticked_product_and_skipped_scores() -> None:
    answer = map_item(
        cosmetics(
            UF_CRM_5_SERUM_TESTED="Y",
            UF_CRM_5_SERUM_SCORE=10,
            UF_CRM_5_CREAM_TESTED="Y",
            UF_CRM_5_CREAM_SCORE=None,
            UF_CRM_5_MASK_TESTED="Y",
            UF_CRM_5_MASK_SCORE=0,
            UF_CRM_5_PEEL_TESTED="N",
            UF_CRM_5_PEEL_SCORE=None,
        ),
        CONFIG,
        {},
    )
    assert not isinstance(answer, NotASurvey)
    assert answer.kind == "cosmetics"
    assert answer.answers == (
        ProductAnswer(sku="COS-SERUM", name="Serum", score=10),
        ProductAnswer(sku="COS-CREAM", name="Day cream", score=None),
        ProductAnswer(sku="COS-MASK", name="Hydrating mask", score=0),
    )


def test_cosmetics_score_without_the_tick_still_counts() -> None:
    answer = map_item(cosmetics(UF_CRM_5_PEEL_TESTED="N", UF_CRM_5_PEEL_SCORE=6), CONFIG, {})
    assert not isinstance(answer, NotASurvey)
    assert answer.answers == (ProductAnswer(sku="COS-PEEL", name="Enzyme peel", score=6),)


def test_cosmetics_nothing_ticked_gives_no_answers() -> None:
    answer = map_item(cosmetics(), CONFIG, {})
    assert not isinstance(answer, NotASurvey)
    assert answer.answers == ()


def test_equipment_without_score_is_a_skipped_answer() -> None:
    answer = map_item(item(UF_CRM_5_SCORE=""), CONFIG, {})
    assert not isinstance(answer, NotASurvey)
    assert answer.answers[0].score is None


def test_enumeration_score_resolves_through_list_items() -> None:
    answer = map_item(item(categoryId=14, UF_CRM_5_CRYO_SCORE=2104), CONFIG, CRYO_ENUM)
    assert not isinstance(answer, NotASurvey)
    assert answer.answers == (ProductAnswer(sku="EQ-CRYO-B", name="Cryo B", score=3),)


def test_unknown_enumeration_item_is_its_own_error() -> None:
    with pytest.raises(UnknownListItemError, match=r"item 41: field UF_CRM_5_CRYO_SCORE holds 999"):
        map_item(item(categoryId=14, UF_CRM_5_CRYO_SCORE=999), CONFIG, CRYO_ENUM)


def test_enumeration_value_that_is_no_number_names_the_list_item() -> None:
    enums = {"UF_CRM_5_SCORE": {"1": "great"}}
    with pytest.raises(AnswerError, match=r"list item 1 of UF_CRM_5_SCORE holds 'great'"):
        map_item(item(UF_CRM_5_SCORE="1"), CONFIG, enums)


def test_unconfigured_category_is_held_with_its_category_and_update_time() -> None:
    result = map_item(item(categoryId=99, UF_CRM_5_SCORE="not read"), CONFIG, {})
    assert isinstance(result, NotASurvey)
    assert "category 99" in result.reason
    assert result.category_id == 99
    assert result.updated_at == datetime(2024, 7, 22, 15, 5, tzinfo=UTC)


def test_unconfigured_category_without_an_update_time_is_unreadable() -> None:
    with pytest.raises(AnswerError, match="updatedTime"):
        map_item(item(categoryId=99, updatedTime=None), CONFIG, {})


@pytest.mark.parametrize(
    ("scale", "raw", "expected"),
    [
        ("0-10", 0, 0),
        ("0-10", 10, 10),
        ("0-10", "7", 7),
        ("0-10", " 8 ", 8),
        ("0-10", 6.0, 6),
        ("0-10", "9.0", 9),
        ("0-10", None, None),
        ("0-10", "", None),
        ("0-10", [], None),
        ("0-10", ["5"], 5),
        ("1-10", 1, 1),
        ("1-10", "10", 10),
        ("binary", 1, 1),
        ("binary", 0, 0),
        ("binary", "yes", 1),
        ("binary", "No", 0),
        ("binary", "Y", 1),
        ("binary", "satisfied", 1),
        ("binary", "unsatisfied", 0),
        ("binary", "да", 1),
    ],
)
def test_scores_on_each_scale(scale: Scale, raw: object, expected: int | None) -> None:
    assert read_score({"S": raw}, "S", scale, {}, 1) == expected


@pytest.mark.parametrize(
    ("scale", "raw"),
    [
        ("0-10", 11),
        ("0-10", -1),
        ("0-10", "abc"),
        ("0-10", 7.5),
        ("0-10", True),
        ("0-10", "nan"),
        ("0-10", {"a": 1}),
        ("0-10", ["5", "6"]),
        ("1-10", 0),
        ("binary", 2),
        ("binary", "maybe"),
    ],
)
def test_unreadable_or_out_of_scale_scores_name_item_field_and_value(
    scale: Scale, raw: object
) -> None:
    with pytest.raises(AnswerError) as caught:
        read_score({"UF_X": raw}, "UF_X", scale, {}, 77)
    message = str(caught.value)
    assert message.startswith("item 77: field UF_X holds ")
    assert repr(raw) in message


def test_out_of_scale_message_states_the_scale() -> None:
    with pytest.raises(AnswerError, match=r"expected a whole number from 1 to 10 \(scale 1-10\)"):
        map_item(item(UF_CRM_5_SCORE=0), with_scale("1-10"), {})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Y", True), ("y", True), ("true", True), (1, True), ("N", False), ("", False), (None, False)],
)
def test_flags(raw: object, expected: bool) -> None:
    assert read_flag({"F": raw}, "F", 1) is expected


def test_garbage_flag_is_an_error() -> None:
    with pytest.raises(AnswerError, match=r"field F holds 'perhaps'; expected a checkbox value"):
        read_flag({"F": "perhaps"}, "F", 1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-07-22T18:00:08+03:00", datetime(2024, 7, 22, 15, 0, 8, tzinfo=UTC)),
        ("2024-07-22T15:00:08Z", datetime(2024, 7, 22, 15, 0, 8, tzinfo=UTC)),
        ("2024-07-22T15:00:08", datetime(2024, 7, 22, 15, 0, 8, tzinfo=UTC)),
        ("22.07.2024 15:00:08", datetime(2024, 7, 22, 15, 0, 8, tzinfo=UTC)),
        ("22.07.2024", datetime(2024, 7, 22, tzinfo=UTC)),
    ],
)
def test_times(raw: str, expected: datetime) -> None:
    assert read_time({"T": raw}, "T", 1) == expected


@pytest.mark.parametrize("raw", [None, "", "yesterday", 1721650808])
def test_bad_times_are_errors(raw: object) -> None:
    with pytest.raises(AnswerError, match=r"field T holds"):
        read_time({"T": raw}, "T", 1)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"categoryId": None}, r"field categoryId holds None"),
        ({"categoryId": "ten"}, r"field categoryId holds 'ten'"),
        ({"contactId": "C_5"}, r"field contactId holds 'C_5'"),
        ({"createdTime": None}, r"field createdTime holds None"),
    ],
)
def test_broken_standard_fields_are_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        map_item(item(**values), CONFIG, {})


@pytest.mark.parametrize(("contact", "expected"), [(0, None), ("", None), ("12", 12), (None, None)])
def test_empty_contact_is_none(contact: object, expected: int | None) -> None:
    answer = map_item(item(contactId=contact), CONFIG, {})
    assert not isinstance(answer, NotASurvey)
    assert answer.contact_id == expected


def test_fingerprint_follows_content_only() -> None:
    first = map_item(item(), CONFIG, {})
    again = map_item(item(UF_CRM_UNRELATED="x"), CONFIG, {})
    changed = map_item(item(UF_CRM_5_SCORE=3), CONFIG, {})
    assert not isinstance(first, NotASurvey)
    assert not isinstance(again, NotASurvey)
    assert not isinstance(changed, NotASurvey)
    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint() != changed.fingerprint()


def test_robot_style_string_values_map_like_typed_ones() -> None:
    typed = map_item(item(), CONFIG, {})
    strings = map_item(
        item(id="41", categoryId="12", contactId="7", assignedById="31", UF_CRM_5_SCORE="9"),
        CONFIG,
        {},
    )
    assert not isinstance(typed, NotASurvey)
    assert not isinstance(strings, NotASurvey)
    assert typed.fingerprint() == strings.fingerprint()


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 3000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(0, 12), st.text(max_size=3)), max_size=3),
)
ITEM_FIELDS = st.sampled_from(
    [
        "id",
        "categoryId",
        "contactId",
        "assignedById",
        "createdTime",
        "updatedTime",
        "UF_CRM_5_COMMENT",
        "UF_CRM_5_TO_SERVICE",
        "UF_CRM_5_SCORE",
        "UF_CRM_5_CRYO_SCORE",
        "UF_CRM_5_SERUM_TESTED",
        "UF_CRM_5_SERUM_SCORE",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(ITEM_FIELDS, ANY_VALUE, max_size=6),
    category=st.sampled_from([10, 12, 14, 99]),
    scale=st.sampled_from(["0-10", "1-10", "binary"]),
)
def test_any_item_maps_or_fails_with_an_answer_error(
    changes: dict[str, Any], category: int, scale: Scale
) -> None:
    """Whatever the portal holds: an answer on the scale, not-a-survey, or a named AnswerError."""
    result = mapped(item(**{"categoryId": category, **changes}), with_scale(scale))
    if isinstance(result, AnswerError):
        assert f"field {result.field} holds" in str(result)
    elif isinstance(result, Answer):
        low, high = SCALE_BOUNDS[scale]
        assert all(a.score is None or low <= a.score <= high for a in result.answers)


def mapped(values: dict[str, Any], config: PortalConfig) -> Answer | NotASurvey | AnswerError:
    try:
        return map_item(values, config, CRYO_ENUM)
    except AnswerError as error:
        return error
