"""Sales deals on the sandbox portal over HTTP (ASGI in process), as dispatch's parts read and
write them: stage semantics, originator ids, the stage history, product rows, automation
triggers and timeline log entries."""

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI

from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from tests.support import FakeClock

SECRET = "s4l3sw3bh00k"
LASER, CRYO = 101, 102
HOOK = "http://ingest.local/webhooks/bitrix24"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_760_000_000.0)


@pytest.fixture
def portal(clock: FakeClock) -> SandboxPortal:
    portal = SandboxPortal(secret=SECRET, clock=clock, limits=Limits.off())
    portal.crm.add_product(LASER, "Laser A", 1_250_000.0)
    portal.crm.add_product(CRYO, "Cryo B", 640_000.0)
    return portal


@pytest.fixture
def events() -> list[dict[str, str]]:
    return []


@pytest.fixture
def app(portal: SandboxPortal, events: list[dict[str, str]]) -> FastAPI:
    def handler(request: httpx.Request) -> httpx.Response:
        events.append(dict(parse_qsl(request.content.decode())))
        return httpx.Response(200)

    portal.register_handler(HOOK, ["ONCRMDEALADD", "ONCRMDEALUPDATE"])
    return create_app(portal, event_transport=httpx.MockTransport(handler))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        yield client


async def call(client: httpx.AsyncClient, method: str, params: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/rest/1/{SECRET}/{method}", json=params)


async def ok(client: httpx.AsyncClient, method: str, params: dict[str, Any]) -> Any:
    response = await call(client, method, params)
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def error(client: httpx.AsyncClient, method: str, params: dict[str, Any]) -> tuple[Any, ...]:
    response = await call(client, method, params)
    body = response.json()
    return response.status_code, body["error"], body["error_description"]


async def new_deal(client: httpx.AsyncClient, **fields: Any) -> int:
    item = await ok(client, "crm.item.add", {"entityTypeId": 2, "fields": fields})
    return int(item["item"]["id"])


async def test_deals_read_their_stage_semantics_in_both_apis(client: httpx.AsyncClient) -> None:
    deal_id = await new_deal(client, title="Sale")
    item = (await ok(client, "crm.item.get", {"entityTypeId": 2, "id": deal_id}))["item"]
    assert (item["stageId"], item["stageSemanticId"]) == ("NEW", "P")
    await ok(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
    deal = await ok(client, "crm.deal.get", {"id": deal_id})
    assert (deal["STAGE_ID"], deal["STAGE_SEMANTIC_ID"]) == ("WON", "S")
    await ok(
        client, "crm.item.update", {"entityTypeId": 2, "id": deal_id, "fields": {"stageId": "LOSE"}}
    )
    won = await ok(client, "crm.deal.list", {"filter": {"STAGE_SEMANTIC_ID": "S"}})
    lost = await ok(
        client, "crm.item.list", {"entityTypeId": 2, "filter": {"stageSemanticId": "F"}}
    )
    assert won == []
    assert [item["id"] for item in lost["items"]] == [deal_id]


async def test_originator_and_origin_ids_are_set_on_add_and_found_by_list(
    client: httpx.AsyncClient,
) -> None:
    mine = await new_deal(
        client, title="NPS", originatorId="b24-nps", originId="req-7", companyId=12, contactId=3
    )
    await new_deal(client, title="Other", originatorId="b24-nps", originId="req-8")
    params = {
        "entityTypeId": 2,
        "filter": {"=originatorId": "b24-nps", "=originId": "req-7"},
        "select": ["id", "originatorId", "originId", "companyId", "contactId"],
    }
    found = (await ok(client, "crm.item.list", params))["items"]
    assert found == [
        {
            "id": mine,
            "originatorId": "b24-nps",
            "originId": "req-7",
            "companyId": 12,
            "contactId": 3,
            "entityTypeId": 2,
        }
    ]
    legacy = await ok(client, "crm.deal.list", {"filter": {"ORIGIN_ID": "req-8"}})
    assert [deal["ORIGINATOR_ID"] for deal in legacy] == ["b24-nps"]


async def test_stage_history_records_creation_and_each_move_like_the_portal(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    deal_id = await new_deal(client, title="Sale")
    clock.now += 60
    await ok(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "PREPARATION"}})
    clock.now += 60
    await ok(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
    await ok(client, "crm.deal.update", {"id": deal_id, "fields": {"TITLE": "Sale, renamed"}})
    params = {"entityTypeId": 2, "filter": {"OWNER_ID": deal_id}, "order": {"ID": "ASC"}}
    history = await call(client, "crm.stagehistory.list", params)
    body = history.json()
    assert body["total"] == 3
    assert [
        (e["TYPE_ID"], e["STAGE_ID"], e["STAGE_SEMANTIC_ID"], e["CATEGORY_ID"])
        for e in body["result"]["items"]
    ] == [(1, "NEW", "P", 0), (2, "PREPARATION", "P", 0), (3, "WON", "S", 0)]
    first, _, won = body["result"]["items"]
    assert set(won) == {
        "ID",
        "TYPE_ID",
        "OWNER_ID",
        "CREATED_TIME",
        "CATEGORY_ID",
        "STAGE_SEMANTIC_ID",
        "STAGE_ID",
    }
    assert isinstance(won["ID"], int)
    assert won["OWNER_ID"] == deal_id
    assert won["CREATED_TIME"] > first["CREATED_TIME"]


async def test_stage_history_filters_by_time_semantics_and_funnel_and_pages_by_50(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    before = [await new_deal(client, title=f"Old {n}") for n in range(3)]
    await ok(client, "crm.deal.update", {"id": before[0], "fields": {"STAGE_ID": "WON"}})
    clock.now += 3600
    watermark = (await ok(client, "crm.deal.get", {"id": before[0]}))["DATE_MODIFY"]
    clock.now += 1
    later = [await new_deal(client, title=f"New {n}") for n in range(60)]
    for deal_id in later[:55]:
        await ok(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
    await ok(client, "crm.deal.update", {"id": later[55], "fields": {"STAGE_ID": "LOSE"}})
    wanted = {
        "entityTypeId": 2,
        "filter": {">CREATED_TIME": watermark, "STAGE_SEMANTIC_ID": ["S", "F"], "CATEGORY_ID": 0},
        "order": {"ID": "ASC"},
        "select": ["OWNER_ID", "STAGE_ID"],
    }
    first = (await call(client, "crm.stagehistory.list", wanted)).json()
    assert (first["total"], first["next"], len(first["result"]["items"])) == (56, 50, 50)
    assert set(first["result"]["items"][0]) == {"ID", "OWNER_ID", "STAGE_ID"}  # ID always
    rest = (await call(client, "crm.stagehistory.list", {**wanted, "start": 50})).json()
    assert "next" not in rest
    owners = [e["OWNER_ID"] for e in first["result"]["items"] + rest["result"]["items"]]
    assert owners == later[:56]
    at_or_after = {**wanted, "filter": {">=CREATED_TIME": watermark, "STAGE_SEMANTIC_ID": "S"}}
    total = (await call(client, "crm.stagehistory.list", at_or_after)).json()["total"]
    assert total == 56


async def test_stage_history_shows_only_stages_of_the_deals_current_funnel(
    client: httpx.AsyncClient,
) -> None:
    await ok(client, "crm.category.add", {"entityTypeId": 2, "fields": {"name": "Service"}})
    deal_id = await new_deal(client, title="Moved")
    await ok(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
    await ok(
        client, "crm.item.update", {"entityTypeId": 2, "id": deal_id, "fields": {"categoryId": 1}}
    )
    params = {"entityTypeId": 2, "filter": {"OWNER_ID": deal_id}}
    items = (await ok(client, "crm.stagehistory.list", params))["items"]
    assert [(e["TYPE_ID"], e["CATEGORY_ID"]) for e in items] == [(5, 1)]


async def test_stage_history_errors_name_the_field_or_type(client: httpx.AsyncClient) -> None:
    assert await error(client, "crm.stagehistory.list", {"entityTypeId": 3}) == (
        400,
        "ENTITY_TYPE_NOT_SUPPORTED",
        "CONTACT entity is not supported",
    )
    bad = {"entityTypeId": 2, "filter": {"TITLE": "x"}}
    assert await error(client, "crm.stagehistory.list", bad) == (
        400,
        "INVALID_ARG_VALUE",
        "Invalid filter: field 'TITLE' is not allowed in filter",
    )


async def test_product_rows_are_set_as_a_whole_and_listed_like_the_portal(
    client: httpx.AsyncClient, portal: SandboxPortal
) -> None:
    deal_id = await new_deal(client, title="Sale")
    rows = [
        {
            "productId": LASER,
            "price": 90000,
            "quantity": 2,
            "discountRate": 10,
            "taxRate": 10,
            "taxIncluded": "Y",
        },
        {"productName": "Installation", "price": 5000, "sort": 5},
    ]
    params = {"ownerType": "D", "ownerId": deal_id, "productRows": rows}
    saved = (await ok(client, "crm.item.productrow.set", params))["productRows"]
    assert [(r["productId"], r["productName"], r["sort"]) for r in saved] == [
        (0, "Installation", 5),
        (LASER, "Laser A", 10),
    ]
    laser = saved[1]
    assert (laser["ownerType"], laser["ownerId"], laser["quantity"]) == ("D", deal_id, 2)
    assert (laser["priceExclusive"], laser["priceNetto"], laser["priceBrutto"]) == (
        81818.18181818,
        90909.09090909,
        100000.0,
    )
    assert laser["discountSum"] == 9090.90909091
    assert (laser["measureCode"], laser["measureName"], laser["type"]) == (796, "pcs", 4)
    deal = await ok(client, "crm.deal.get", {"id": deal_id})
    assert deal["OPPORTUNITY"] == "185000"
    listed = await call(
        client, "crm.item.productrow.list", {"filter": {"=ownerType": "D", "=ownerId": deal_id}}
    )
    assert listed.json()["result"]["productRows"] == saved
    assert listed.json()["total"] == 2
    keep = {"id": laser["id"], "productId": CRYO, "price": 1}
    again = await ok(client, "crm.item.productrow.set", {**params, "productRows": [keep]})
    assert [(r["id"], r["productName"]) for r in again["productRows"]] == [(laser["id"], "Cryo B")]
    assert len(portal.state.product_rows) == 1


async def test_product_rows_filter_by_id_and_product_and_ignore_other_fields(
    client: httpx.AsyncClient,
) -> None:
    deal_id = await new_deal(client, title="Sale")
    other = await new_deal(client, title="Other sale")
    rows = [{"productId": LASER, "price": 1}, {"productId": CRYO, "price": 2}]
    for owner in (deal_id, other):
        await ok(
            client,
            "crm.item.productrow.set",
            {"ownerType": "D", "ownerId": owner, "productRows": rows},
        )
    owner_filter = {"=ownerType": "D", "=ownerId": deal_id}
    by_product = {"filter": {**owner_filter, "=productId": CRYO, "price": 999}}
    listed = (await ok(client, "crm.item.productrow.list", by_product))["productRows"]
    assert [(r["ownerId"], r["productId"]) for r in listed] == [(deal_id, CRYO)]
    everything = await ok(client, "crm.item.productrow.list", {"filter": owner_filter})
    ids = [r["id"] for r in everything["productRows"]]
    picked = {"filter": {**owner_filter, "@id": ids[1:]}, "order": {"id": "desc"}}
    assert [
        r["id"] for r in (await ok(client, "crm.item.productrow.list", picked))["productRows"]
    ] == ids[1:]
    newest_first = {"filter": owner_filter, "order": {"id": "desc"}, "start": -1}
    response = await call(client, "crm.item.productrow.list", newest_first)
    assert [r["id"] for r in response.json()["result"]["productRows"]] == ids[::-1]
    assert "total" not in response.json()


async def test_product_row_errors_are_the_portals(client: httpx.AsyncClient) -> None:
    deal_id = await new_deal(client, title="Sale")
    assert await error(client, "crm.item.productrow.list", {"filter": {"=ownerType": "D"}}) == (
        400,
        "REQUIRED_ARG_MISSING",
        "Required filter keys missing: =ownerId",
    )
    missing = {"filter": {"=ownerType": "D", "=ownerId": 999}}
    assert (await error(client, "crm.item.productrow.list", missing))[:2] == (400, "ACCESS_DENIED")
    unknown = {"ownerType": "D", "ownerId": deal_id, "productRows": [{"productId": 5}]}
    assert await error(client, "crm.item.productrow.set", unknown) == (
        400,
        "INVALID_ARG_VALUE",
        "productRows[0].productId: product 5 was not found in the catalog",
    )
    bad_price = {
        "ownerType": "D",
        "ownerId": deal_id,
        "productRows": [{"productId": LASER, "price": "a lot"}],
    }
    assert (await error(client, "crm.item.productrow.set", bad_price))[2] == (
        "productRows[0].price: expected a number"
    )
    nowhere = {"ownerType": "D", "ownerId": 999, "productRows": []}
    assert (await error(client, "crm.item.productrow.set", nowhere))[:2] == (400, "OWNER_NOT_FOUND")
    no_rows = {"ownerType": "D", "ownerId": deal_id}
    assert await error(client, "crm.item.productrow.set", no_rows) == (
        400,
        "100",
        "Could not find value for parameter {productRows}",
    )
    listed = await ok(
        client, "crm.item.productrow.list", {"filter": {"=ownerType": "D", "=ownerId": deal_id}}
    )
    assert listed["productRows"] == []


async def test_product_rows_in_a_batch_command(client: httpx.AsyncClient) -> None:
    deal_id = await new_deal(client, title="Sale")
    command = (
        f"crm.item.productrow.set?ownerType=D&ownerId={deal_id}"
        f"&productRows[0][productId]={LASER}&productRows[0][price]=10&productRows[0][quantity]=3"
    )
    # "=" inside a key is percent-encoded in a query string, as PHP's parse_str needs it
    listing = f"crm.item.productrow.list?filter[%3DownerType]=D&filter[%3DownerId]={deal_id}"
    result = await ok(client, "batch", {"cmd": {"set": command, "list": listing}})
    [row] = result["result"]["list"]["productRows"]
    assert (row["productId"], row["price"], row["quantity"]) == (LASER, 10, 3)


async def test_automation_triggers_are_recorded_and_errors_are_the_portals(
    client: httpx.AsyncClient, portal: SandboxPortal
) -> None:
    portal.state.trigger_codes.append("nps_send")
    deal_id = await new_deal(client, title="NPS")
    assert (
        await ok(
            client, "crm.automation.trigger", {"target": f"DEAL_{deal_id}", "code": "nps_send"}
        )
        is True
    )
    assert (
        await ok(client, "crm.automation.trigger", {"target": "DEAL_999", "code": "other"}) is True
    )
    for params, description in (
        ({"code": "nps_send"}, "Target is not set."),
        ({"target": "DEAL", "code": "x"}, "Incorrect target format."),
        ({"target": "DEAL_x", "code": "x"}, "Incorrect target format."),
        ({"target": "GADGET_1", "code": "x"}, "Target is not found."),
    ):
        assert await error(client, "crm.automation.trigger", params) == (400, "", description)
    runs = (await client.get("/sandbox/triggers")).json()["triggers"]
    assert [(r["target"], r["code"], r["entity_id"], r["found"], r["matched"]) for r in runs] == [
        (f"DEAL_{deal_id}", "nps_send", deal_id, True, True),
        ("DEAL_999", "other", 999, False, False),
    ]


async def test_timeline_log_messages_are_recorded_for_existing_items(
    client: httpx.AsyncClient,
) -> None:
    deal_id = await new_deal(client, title="NPS")
    fields = {
        "entityTypeId": 2,
        "entityId": deal_id,
        "title": "NPS survey sent",
        "text": "The customer got the survey link.",
        "iconCode": "info",
    }
    added = (await ok(client, "crm.timeline.logmessage.add", {"fields": fields}))["logMessage"]
    assert set(added) == {"id", "created", "authorId", "title", "text", "iconCode"}
    assert (added["title"], added["authorId"], added["iconCode"]) == ("NPS survey sent", 1, "info")
    missing = {"fields": {**fields, "entityId": 999}}
    assert (await error(client, "crm.timeline.logmessage.add", missing))[:2] == (
        400,
        "OWNER_NOT_FOUND",
    )
    no_text = {"fields": {key: value for key, value in fields.items() if key != "text"}}
    assert await error(client, "crm.timeline.logmessage.add", no_text) == (
        400,
        "100",
        "Required fields are not provided: text",
    )
    timeline = (await client.get("/sandbox/timeline")).json()["log_messages"]
    assert [(m["entityTypeId"], m["entityId"], m["id"]) for m in timeline] == [
        (2, deal_id, added["id"])
    ]


async def test_closing_sales_moves_open_deals_to_won_and_opens_more_when_needed(
    client: httpx.AsyncClient, portal: SandboxPortal, events: list[dict[str, str]]
) -> None:
    contact = portal.crm.add(3, {"NAME": "Vera", "LAST_NAME": "Titov"}, method="test")["ID"]
    oldest = await new_deal(client, title="Oldest", contactId=contact)
    await new_deal(client, title="Nobody's", contactId=None)
    newer = await new_deal(client, title="Newer", contactId=contact, stageId="PREPARATION")
    lost = await new_deal(client, title="Lost", contactId=contact, stageId="LOSE")
    events.clear()
    response = await client.post("/sandbox/close-sales", params={"count": 3, "seed": 1})
    assert response.status_code == 200, response.text
    closed = response.json()
    assert closed["closed"][:2] == [oldest, newer]
    [opened] = closed["created"]
    assert closed["closed"][2] == opened
    for deal_id in closed["closed"]:
        deal = await ok(client, "crm.deal.get", {"id": deal_id})
        assert (deal["STAGE_ID"], deal["STAGE_SEMANTIC_ID"]) == ("WON", "S")
    assert (await ok(client, "crm.deal.get", {"id": lost}))["STAGE_ID"] == "LOSE"
    new = portal.crm.get(2, opened)
    assert new is not None
    customer = portal.crm.get(3, new["CONTACT_ID"])
    assert customer is not None
    assert customer["EMAIL"][0]["VALUE"].endswith("@example.org")  # the portal had none
    assert portal.crm.product_rows("D", opened)
    updates = [int(e["data[FIELDS][ID]"]) for e in events if e["event"] == "ONCRMDEALUPDATE"]
    assert set(closed["closed"]) <= set(updates)
    history = {"entityTypeId": 2, "filter": {"STAGE_SEMANTIC_ID": "S", "TYPE_ID": 3}}
    moved = (await ok(client, "crm.stagehistory.list", history))["items"]
    assert sorted(e["OWNER_ID"] for e in moved) == sorted(closed["closed"])
    assert (await client.post("/sandbox/close-sales", params={"count": 0})).status_code == 422


async def test_a_deals_page_and_json_show_what_the_portal_keeps_about_it(
    client: httpx.AsyncClient, portal: SandboxPortal
) -> None:
    deal_id = await new_deal(client, title="Sale <Laser>")
    rows = {"ownerType": "D", "ownerId": deal_id, "productRows": [{"productId": LASER, "price": 5}]}
    await ok(client, "crm.item.productrow.set", rows)
    await ok(client, "crm.automation.trigger", {"target": f"DEAL_{deal_id}", "code": "nps_send"})
    log = {
        "entityTypeId": 2,
        "entityId": deal_id,
        "title": "Survey sent",
        "text": "By <e-mail>",
        "iconCode": "info",
    }
    await ok(client, "crm.timeline.logmessage.add", {"fields": log})
    await ok(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
    details = (await client.get(f"/sandbox/deals/{deal_id}")).json()
    assert details["deal"]["TITLE"] == "Sale <Laser>"
    assert [r["productName"] for r in details["product_rows"]] == ["Laser A"]
    assert [e["STAGE_ID"] for e in details["stage_history"]] == ["NEW", "WON"]
    assert [t["code"] for t in details["triggers"]] == ["nps_send"]
    assert [m["title"] for m in details["log_messages"]] == ["Survey sent"]
    page = await client.get(f"/crm/deal/details/{deal_id}/")
    assert page.status_code == 200
    assert "Sale &lt;Laser&gt;" in page.text
    for shown in ("Product rows", "Laser A", "Stage history", "nps_send", "By &lt;e-mail&gt;"):
        assert shown in page.text
    assert (await client.get("/sandbox/deals/999")).status_code == 404
    assert (await client.get("/crm/deal/details/999/")).status_code == 404
