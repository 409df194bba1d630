"""Sales closed (dispatch): which deal is a closed sale, the `sale.closed` built from it, and the
deal events and robot calls the webhook takes for it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from services.ingest.mapping import AnswerError
from services.ingest.sales import (
    ClosedSale,
    NotASale,
    StagesNeeded,
    closed_at,
    decide_sale,
    in_sales_funnel,
    sale_event_id,
    sales_funnels,
    sold_products,
)
from services.ingest.webhook import (
    Accepted,
    Ignored,
    RequestError,
    parse_form,
    read_event,
    read_robot,
)
from shared.deal_stages import Funnel, Stage
from shared.events import PortalRef, SoldProduct
from shared.portal_config import load_portal_config
from tests.support import with_sales
from tests.support.paths import EXAMPLE_CONFIG

BASE = load_portal_config(EXAMPLE_CONFIG).model_copy(update={"dispatch": None})
"""The example without its dispatch section: no sales funnel watched."""
CONFIG = with_sales(BASE, 0, 3)
"""Sales funnels 0 and 3 watched; the NPS deal funnel 20 of the example stays."""
SALES_ONLY = with_sales(BASE, 0, 3, deal_surveys=[])
NEITHER = BASE.model_copy(update={"deal_surveys": []})
PORTAL = PortalRef(member_id="d897063e1ce7c5eb9f04b9751eef5915")
NOW = datetime(2024, 7, 22, 15, 0, tzinfo=UTC)
FUNNEL_3 = Funnel(
    3,
    (
        Stage("C3:NEW", "New", "process", 10),
        Stage("C3:WON", "Paid", "success", 20),
        Stage("C3:LOSE", "Lost", "failure", 30),
    ),
)


def deal(**values: Any) -> dict[str, Any]:
    """A sales deal as `crm.item.list` gives it (entityTypeId 2, useOriginalUfNames=Y)."""
    base: dict[str, Any] = {
        "id": 410,
        "categoryId": 3,
        "stageId": "C3:WON",
        "stageSemanticId": "S",
        "contactId": 7,
        "companyId": 12,
        "assignedById": 32,
        "closedate": "2024-07-22T03:00:00+03:00",
        "movedTime": "2024-07-22T17:55:00+03:00",
        "updatedTime": "2024-07-22T18:00:00+03:00",
    }
    return {**base, **values}


# --- which deal is a closed sale -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "funnel", "robot", "expected"),
    [
        ({}, None, False, "sale"),
        ({"stageSemanticId": "s"}, None, False, "sale"),
        ({"stageSemanticId": "P", "stageId": "C3:NEW"}, None, False, "stage C3:NEW is no success"),
        ({"stageSemanticId": "F", "stageId": "C3:LOSE"}, FUNNEL_3, False, "(stageSemanticId F)"),
        ({"stageSemanticId": None}, None, False, "stages"),
        ({"stageSemanticId": ""}, FUNNEL_3, False, "sale"),
        ({"stageSemanticId": None, "stageId": "C3:NEW"}, FUNNEL_3, False, "a process stage"),
        ({"stageSemanticId": None, "stageId": "C3:LOSE"}, FUNNEL_3, False, "a failure stage"),
        ({"stageSemanticId": None, "stageId": "C3:PAID2"}, FUNNEL_3, False, "stages"),
        ({"stageSemanticId": "P", "stageId": "C3:NEW"}, None, True, "sale"),
        ({"categoryId": 5}, None, False, "deal category 5 is no sales funnel"),
        ({"categoryId": 20}, None, True, "deal category 20 is no sales funnel"),
        ({"categoryId": "0", "stageId": "WON"}, None, False, "sale"),
    ],
    ids=[
        "semantic-S",
        "semantic-lower-case",
        "semantic-P",
        "semantic-F-wins-over-stages",
        "no-semantic-no-stages-yet",
        "empty-semantic-success-stage",
        "process-stage",
        "failure-stage",
        "stage-unknown-to-funnel",
        "robot-ignores-the-stage",
        "another-funnel",
        "robot-in-the-nps-funnel",
        "default-funnel-as-string",
    ],
)
def test_which_deal_is_a_closed_sale(
    values: dict[str, Any], funnel: Funnel | None, robot: bool, expected: str
) -> None:
    decision = decide_sale(deal(**values), CONFIG, funnel, robot=robot)
    if expected == "sale":
        assert isinstance(decision, ClosedSale)
    elif expected == "stages":
        assert decision == StagesNeeded(3, str(deal(**values)["stageId"]))
    else:
        assert isinstance(decision, NotASale)
        assert expected in decision.reason


def test_without_a_dispatch_section_no_deal_is_a_sale() -> None:
    decision = decide_sale(deal(), BASE, FUNNEL_3)
    assert decision == NotASale(
        "deal category 3 is no sales funnel under dispatch.sales (funnels: none)"
    )
    assert sales_funnels(BASE) == ()
    assert sales_funnels(CONFIG) == (0, 3)


def test_a_closed_sale_carries_its_people_and_close_time() -> None:
    decision = decide_sale(deal(), CONFIG, None)
    assert decision == ClosedSale(
        deal_id=410,
        category_id=3,
        stage_id="C3:WON",
        contact_id=7,
        company_id=12,
        responsible_id=32,
        closed_at=datetime.fromisoformat("2024-07-22T17:55:00+03:00"),
    )
    bare = decide_sale(deal(contactId=None, companyId="0", assignedById=""), CONFIG, None)
    assert isinstance(bare, ClosedSale)
    assert (bare.contact_id, bare.company_id, bare.responsible_id) == (None, None, None)


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ((), "2024-07-22T17:55:00+03:00"),
        (("movedTime",), "2024-07-22T03:00:00+03:00"),
        (("closedate", "movedTime"), "2024-07-22T18:00:00+03:00"),
    ],
)
def test_the_close_time_is_the_first_the_portal_gives(
    missing: tuple[str, ...], expected: str
) -> None:
    values = dict.fromkeys(missing)
    assert closed_at(deal(**values), 410) == datetime.fromisoformat(expected)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"closedate": None, "movedTime": "", "updatedTime": None}, "updatedTime"),
        ({"movedTime": "soon"}, "movedTime"),
        ({"stageId": None}, "stageId"),
        ({"contactId": "seven"}, "contactId"),
        ({"categoryId": "x"}, "categoryId"),
    ],
)
def test_an_unreadable_deal_is_an_error_naming_the_deal_and_field(
    values: dict[str, Any], field: str
) -> None:
    with pytest.raises(AnswerError) as caught:
        decide_sale(deal(**values), CONFIG, None)
    assert caught.value.field == field
    assert str(caught.value).startswith("item 410: field")


def test_in_sales_funnel_reads_the_category_leniently() -> None:
    assert in_sales_funnel({"id": 1, "categoryId": "3"}, CONFIG)
    assert not in_sales_funnel({"id": 1, "categoryId": 20}, CONFIG)
    assert not in_sales_funnel({"id": 1}, CONFIG)
    assert not in_sales_funnel({"id": 1, "categoryId": 3}, BASE)


# --- the event -------------------------------------------------------------------------------


def test_the_event_of_a_closed_sale() -> None:
    decision = decide_sale(deal(), CONFIG, None)
    assert isinstance(decision, ClosedSale)
    products = (SoldProduct(product_id=101, name="Laser A", quantity=2),)
    event = decision.event(
        PORTAL, "event", products, correlation_id="corr-410", causation_id="cause-1"
    )
    assert event.routing_key() == "sale.closed"
    assert event.event_id == sale_event_id(PORTAL, 410)
    assert (event.correlation_id, event.causation_id) == ("corr-410", "cause-1")
    assert (event.portal, event.source, event.deal_id) == (PORTAL, "event", 410)
    assert (event.category_id, event.stage_id) == (3, "C3:WON")
    assert (event.contact_id, event.company_id, event.responsible_id) == (7, 12, 32)
    assert event.closed_at == datetime.fromisoformat("2024-07-22T17:55:00+03:00")
    assert event.products == products
    again = decision.event(PORTAL, "sweep", (), correlation_id="x", causation_id="another")
    assert again.event_id == event.event_id  # one message id per deal, whichever path


def test_the_event_id_is_per_portal_and_deal() -> None:
    other = PortalRef(member_id="another")
    ids = {sale_event_id(PORTAL, 410), sale_event_id(PORTAL, 411), sale_event_id(other, 410)}
    assert len(ids) == 3


def test_product_rows_become_sold_products() -> None:
    rows = [
        {
            "id": 1,
            "ownerId": 410,
            "ownerType": "D",
            "productId": 101,
            "productName": "Laser A ",
            "price": 1000,
            "quantity": 2,
        },
        {"id": 2, "productId": 0, "productName": "Installation", "quantity": "1.5"},
        {"id": 3, "productId": None, "productName": None},
        "not a row",
    ]
    assert sold_products(410, rows) == (
        SoldProduct(product_id=101, name="Laser A", quantity=2),
        SoldProduct(product_id=0, name="Installation", quantity=1.5),
        SoldProduct(product_id=0, name="", quantity=1),
    )
    assert sold_products(410, []) == ()


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"productId": 101, "quantity": "many"}, "productRows[0].quantity"),
        ({"productId": 101, "quantity": -1}, "productRows[0].quantity"),
        ({"productId": 101, "quantity": "nan"}, "productRows[0].quantity"),
        ({"productId": "laser"}, "productRows[0].productId"),
    ],
)
def test_an_unreadable_product_row_names_the_row_and_field(row: dict[str, Any], field: str) -> None:
    with pytest.raises(AnswerError) as caught:
        sold_products(410, [row])
    assert caught.value.field == field


# --- the webhook: deal events and the won stage's robot ----------------------------------------


def deal_event(event: str = "ONCRMDEALUPDATE") -> dict[str, Any]:
    return parse_form(
        urlencode(
            {
                "event": event,
                "data[FIELDS][ID]": "410",
                "ts": "1766047124",
                "auth[member_id]": PORTAL.member_id,
                "auth[application_token]": "secret",
            }
        )
    )


@pytest.mark.parametrize("event", ["ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALMOVETOCATEGORY"])
def test_deal_events_are_accepted_with_sales_funnels_alone(event: str) -> None:
    for config in (SALES_ONLY, CONFIG):
        result = read_event(deal_event(event), config)
        assert isinstance(result, Accepted)
        assert (result.event, result.entity_type_id, result.item_id, result.fields) == (
            event,
            2,
            410,
            None,
        )


def test_deal_events_are_ignored_without_deal_surveys_or_sales_funnels() -> None:
    result = read_event(deal_event("ONCRMDEALMOVETOCATEGORY"), NEITHER)
    assert isinstance(result, Ignored)
    assert "no deal survey (deal_surveys) and no sales funnel (dispatch.sales)" in result.reason


def robot(**values: str) -> dict[str, Any]:
    base = {
        "application_token": "secret",
        "member_id": PORTAL.member_id or "",
        "entity_type_id": "2",
        "id": "410",
        "category_id": "3",
        "contact_id": "7",
    }
    return parse_form(urlencode({**base, **values}))


def test_the_won_stages_robot_is_a_sale_the_hydrator_reads() -> None:
    for config in (SALES_ONLY, CONFIG):
        result = read_robot(robot(updated_time="2024-07-22T18:00:08+03:00"), config, NOW)
        assert isinstance(result, Accepted)
        assert (result.source, result.event, result.entity_type_id, result.item_id) == (
            "robot",
            "ROBOT",
            2,
            410,
        )
        assert result.fields == {"id": 410, "entityTypeId": 2, "categoryId": 3}
        assert result.ts == int(datetime.fromisoformat("2024-07-22T18:00:08+03:00").timestamp())
        assert "secret" not in str(result.payload)
        assert result.payload["contact_id"] == "7"
    assert read_robot(robot(), CONFIG, NOW).ts is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("config", "category", "reason"),
    [
        (
            CONFIG,
            "5",
            "deal category 5 is neither a sales funnel under dispatch.sales (0, 3) nor"
            " a deal survey's funnel (20)",
        ),
        (
            SALES_ONLY,
            "20",
            "deal category 20 is neither a sales funnel under dispatch.sales (0, 3)"
            " nor a deal survey's funnel (none)",
        ),
        (NEITHER, "3", "entity type 2 is not the NPS smart process 1038"),
    ],
)
def test_a_robot_naming_a_deal_of_another_funnel_is_ignored(
    config: Any, category: str, reason: str
) -> None:
    result = read_robot(robot(category_id=category), config, NOW)
    assert result == Ignored("ROBOT", reason)


def test_a_robot_in_the_nps_funnel_still_brings_an_answer() -> None:
    result = read_robot(robot(category_id="20", UF_CRM_NPS_SCORE="9"), CONFIG, NOW)
    assert isinstance(result, Accepted)
    assert result.fields is not None
    assert (result.fields["categoryId"], result.fields["UF_CRM_NPS_SCORE"]) == (20, "9")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"updated_time": "yesterday"}, "updated_time"),
        ({"created_time": "soon"}, "created_time"),
        ({"category_id": "three"}, "category_id"),
    ],
)
def test_a_bad_sale_robot_call_is_400(values: dict[str, str], field: str) -> None:
    with pytest.raises(RequestError) as caught:
        read_robot(robot(**values), CONFIG, NOW)
    assert (caught.value.status, caught.value.field) == (400, field)
