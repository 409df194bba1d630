"""The sandbox portal over HTTP (ASGI in process): URL shape, bodies, inspection, events."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI

from services.reports.views import contact_url, item_url, portal_origin
from services.sandbox.app import create_app
from services.sandbox.brackets import encode
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from tests.support import FakeClock

CONFIG = Path(__file__).parents[2] / "config" / "portal.example.yaml"
NPS = 1038
HOOK = "http://ingest.local/webhooks/bitrix24"


class Handler:
    """Stands in for ingest: records event POSTs, answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_760_000_000.0)


@pytest.fixture
def portal(clock: FakeClock) -> SandboxPortal:
    portal = SandboxPortal(secret="s3cr3tw3bh00k", clock=clock)
    seed_demo(portal, CONFIG, contacts=30, seed=5)
    return portal


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def app(portal: SandboxPortal, handler: Handler) -> FastAPI:
    return create_app(portal, event_transport=httpx.MockTransport(handler))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        yield client


def rest(method: str) -> str:
    return f"/rest/1/s3cr3tw3bh00k/{method}"


async def test_wrong_secret_is_401_and_unknown_method_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/rest/1/wrong/user.get.json", json={"ID": 1})
    assert response.status_code == 401
    assert response.json()["error"] == "NO_AUTH_FOUND"
    assert response.json()["error_description"] == "Wrong authorization data"
    response = await client.post(rest("crm.company.list"), json={})
    assert (response.status_code, response.json()["error"]) == (404, "ERROR_METHOD_NOT_FOUND")


async def test_get_query_json_and_form_bodies(client: httpx.AsyncClient) -> None:
    response = await client.get(rest("user.get.json"), params={"ID": 5})
    assert response.json()["result"][0]["LAST_NAME"] == "Kuznetsova"

    form = (
        f"entityTypeId={NPS}&useOriginalUfNames=Y&fields%5BcategoryId%5D=14"
        "&fields%5BUF_CRM_5_CRYO_SCORE%5D=2004&fields%5BcontactId%5D=3"
        "&fields%5BOBSERVERS%5D%5B0%5D=31&fields%5BOBSERVERS%5D%5B1%5D=32"
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post(rest("crm.item.add.json"), content=form, headers=headers)
    assert response.status_code == 200, response.text
    item = response.json()["result"]["item"]
    assert (item["UF_CRM_5_CRYO_SCORE"], item["contactId"], item["observers"]) == (
        2004,
        3,
        [31, 32],
    )

    form = "filter%5B%40ID%5D%5B0%5D=1&filter%5B%40ID%5D%5B1%5D=3&select%5B%5D=ID"
    response = await client.post(rest("crm.contact.list"), content=form, headers=headers)
    assert [row["ID"] for row in response.json()["result"]] == ["1", "3"]

    response = await client.post(
        rest("crm.item.list"),
        json={"entityTypeId": NPS, "filter": {"@id": [item["id"]]}, "select": ["id"]},
    )
    assert response.json()["result"]["items"] == [{"id": item["id"], "entityTypeId": NPS}]

    response = await client.post(
        rest("user.get"), content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]) == (400, "INVALID_REQUEST")


async def test_batch_in_a_form_body(client: httpx.AsyncClient) -> None:
    body = encode(
        {
            "halt": 0,
            "cmd": {
                "one": "user.get?" + encode({"ID": 17}),
                "two": "crm.contact.get?" + encode({"ID": "$result[one][0][ID]"}),
            },
        }
    )
    response = await client.post(
        rest("batch"), content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    result = response.json()["result"]
    assert result["result"]["one"][0]["NAME"] == "Sergey"
    assert result["result"]["two"]["ID"] == "17"
    assert result["result_error"] == []
    assert set(result["result_time"]) == {"one", "two"}


async def test_bucket_over_http_and_calls_report(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    statuses = [(await client.get(rest("user.get"))).status_code for _ in range(51)]
    assert statuses[-2:] == [200, 503]
    clock.now += 1
    assert (await client.get(rest("user.get"))).status_code == 200
    report = (await client.get("/sandbox/calls", params={"limit": 2})).json()
    assert report["limit_errors"]["QUERY_LIMIT_EXCEEDED"] == 1
    assert [(c["status"], c["error"]) for c in report["calls"]] == [
        (503, "QUERY_LIMIT_EXCEEDED"),
        (200, None),
    ]


async def test_limits_can_be_read_changed_and_switched_off(client: httpx.AsyncClient) -> None:
    assert (await client.get("/sandbox/limits")).json()["per_second"] == 2.0
    response = await client.put("/sandbox/limits", json={"per_second": None, "burst": 5})
    assert response.json()["per_second"] is None
    assert response.json()["operating_limit_s"] == 480.0
    codes = [(await client.get(rest("user.get"))).status_code for _ in range(60)]
    assert set(codes) == {200}
    assert (await client.put("/sandbox/limits", json={"burst": 0})).status_code == 422
    response = await client.put(
        "/sandbox/limits", json={"cost_per_call_s": 300, "operating_limit_s": 500}
    )
    assert response.status_code == 200
    codes = [(await client.get(rest("user.get"))).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    body = (await client.get(rest("user.get"))).json()
    assert body["time"]["operating"] == 600
    assert "operating_reset_at" in body["time"]


async def test_faults_over_http(client: httpx.AsyncClient) -> None:
    response = await client.put("/sandbox/faults", json={"error_count": 2, "latency_s": 0.01})
    assert response.json()["errors_left"] == 2
    codes = [(await client.get(rest("user.get"))).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    await client.put("/sandbox/faults", json={"outage_s": 30, "outage_status": 500})
    assert (await client.get(rest("user.get"))).json()["error"] == "INTERNAL_SERVER_ERROR"
    await client.post("/sandbox/reset")
    assert (await client.get(rest("user.get"))).status_code == 200
    assert (await client.get("/sandbox/calls")).json()["requests"] == 1


async def test_a_hung_request_is_counted_in_the_bucket_when_it_arrives(
    client: httpx.AsyncClient,
) -> None:
    """Bitrix24 counts a request when it receives it: requests hanging in the portal hold their
    place in the bucket, and one more beyond the burst is refused at once."""
    await client.put("/sandbox/limits", json={"burst": 2})
    await client.put("/sandbox/faults", json={"hang_count": 2, "hang_s": 0.3})
    hung = [asyncio.create_task(client.get(rest("user.get"))) for _ in range(2)]
    await asyncio.sleep(0.1)
    refused = await client.get(rest("user.get"))
    assert (refused.status_code, refused.json()["error"]) == (503, "QUERY_LIMIT_EXCEEDED")
    assert not any(task.done() for task in hung)
    assert [response.status_code for response in await asyncio.gather(*hung)] == [200, 200]


async def test_contact_history_records_every_change(client: httpx.AsyncClient) -> None:
    before = (await client.post(rest("crm.contact.get"), json={"ID": 4})).json()["result"]
    await client.post(
        rest("crm.contact.update"),
        json={"ID": 4, "FIELDS": {"UF_CRM_NPS_LASER_A": "9", "NAME": before["NAME"]}},
    )
    history = (await client.get("/sandbox/contacts/4/history")).json()
    last = history["changes"][-1]
    assert (last["field"], last["before"], last["after"], last["method"]) == (
        "UF_CRM_NPS_LASER_A",
        before["UF_CRM_NPS_LASER_A"],
        "9",
        "crm.contact.update",
    )
    assert history["changes"][0]["method"] == "seed"
    assert (await client.get("/sandbox/contacts/999999/history")).status_code == 404


async def test_the_dashboards_links_open_the_item_and_the_contact(
    client: httpx.AsyncClient,
) -> None:
    """The addresses the dashboard builds for Bitrix24 lead to pages of the sandbox too."""
    origin = portal_origin(f"http://sandbox{rest('')}")
    item = (await client.post("/sandbox/answers", json={"count": 1, "seed": 3})).json()
    item_id = item["created"][0]
    contact = (await client.post(rest("crm.contact.get"), json={"ID": 4})).json()["result"]

    item_page = await client.get(item_url(origin, NPS, item_id) or "")
    contact_page = await client.get(contact_url(origin, 4) or "")
    missing = await client.get(contact_url(origin, 999999) or "")

    assert item_page.status_code == 200, item_page.text
    assert f"#{item_id}</h1>" in item_page.text
    assert contact_page.status_code == 200
    assert contact["NAME"] in contact_page.text
    assert contact_page.headers["content-security-policy"] == "default-src 'none'"
    assert missing.status_code == 404
    assert "No contact 999999" in missing.text


async def wait_for(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        events = (await client.get("/sandbox/events")).json()["deliveries"]
        if len(events) >= count and all(e["status"] != "pending" for e in events):
            return list(events)
        await asyncio.sleep(0.01)
    raise AssertionError(f"events not delivered: {events}")


async def test_item_add_posts_the_event_to_registered_handlers(
    client: httpx.AsyncClient, portal: SandboxPortal, handler: Handler
) -> None:
    response = await client.post("/sandbox/handlers", json={"url": HOOK})
    add_id = response.json()["handlers"][0]["id"]
    response = await client.post(
        rest("crm.item.add"), json={"entityTypeId": NPS, "fields": {"categoryId": 12}}
    )
    item_id = response.json()["result"]["item"]["id"]
    events = await wait_for(client, 1)
    assert events[0]["status"] == "delivered"
    request = handler.requests[0]
    assert str(request.url) == HOOK
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(request.content.decode()))
    assert form == {
        "event": "ONCRMDYNAMICITEMADD",
        "event_handler_id": str(add_id),
        "data[FIELDS][ID]": str(item_id),
        "data[FIELDS][ENTITY_TYPE_ID]": str(NPS),
        "ts": form["ts"],
        "auth[domain]": portal.domain,
        "auth[client_endpoint]": f"https://{portal.domain}/rest/",
        "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
        "auth[member_id]": portal.member_id,
        "auth[application_token]": portal.application_token,
    }


async def test_answers_fire_events_and_failures_are_recorded_not_retried(
    client: httpx.AsyncClient, handler: Handler
) -> None:
    handler.status = 500
    await client.post("/sandbox/handlers", json={"url": HOOK, "events": ["ONCRMDYNAMICITEMADD"]})
    response = await client.post("/sandbox/answers", json={"count": 3, "seed": 1})
    assert len(response.json()["created"]) == 3
    events = await wait_for(client, 3)
    assert [(e["status"], e["http_status"]) for e in events] == [("failed", 500)] * 3
    await asyncio.sleep(0.05)
    assert len(handler.requests) == 3
    response = await client.post(
        "/sandbox/answers", json={"items": [{"categoryId": 12, "UF_CRM_5_SCORE": 0}]}
    )
    item_id = response.json()["created"][0]
    items = (await client.get("/sandbox/items", params={"entity_type_id": NPS})).json()["items"]
    assert any(i["id"] == item_id and i["UF_CRM_5_SCORE"] == 0 for i in items)
    bad = await client.post("/sandbox/answers", json={"items": [{"UF_CRM_5_CRYO_SCORE": 9}]})
    assert bad.status_code == 422


async def test_info_tasks_and_leads_inspection(client: httpx.AsyncClient) -> None:
    info = (await client.get("/sandbox/info")).json()
    assert info["webhook_url"] == "http://sandbox/rest/1/s3cr3tw3bh00k/"
    assert info["smart_processes"] == [NPS]
    assert info["nps_deal_funnels"] == [20]
    await client.post(
        rest("tasks.task.add"),
        json={"fields": {"TITLE": "Call back", "RESPONSIBLE_ID": 5, "UF_CRM_TASK": ["C_1"]}},
    )
    await client.post(
        rest("crm.lead.add"), json={"fields": {"TITLE": "Service", "ORIGIN_ID": "a1"}}
    )
    tasks = (await client.get("/sandbox/tasks")).json()["tasks"]
    assert [(t["TITLE"], t["RESPONSIBLE_ID"], t["UF_CRM_TASK"]) for t in tasks] == [
        ("Call back", 5, ["C_1"])
    ]
    leads = (await client.get("/sandbox/leads")).json()["leads"]
    assert [(lead["TITLE"], lead["ORIGIN_ID"]) for lead in leads] == [("Service", "a1")]
    assert json.dumps((await client.get("/sandbox/handlers")).json()) == '{"handlers": []}'


async def test_nps_deals_are_opened_answered_and_listed_with_their_stage_moves(
    client: httpx.AsyncClient,
) -> None:
    opened = (await client.post("/sandbox/answers", json={"deals": 3, "seed": 2})).json()
    assert opened["created"] == []
    [moved, *_] = opened["deals"]
    await client.post(
        rest("crm.deal.update"), json={"id": moved, "fields": {"STAGE_ID": "C20:WON"}}
    )
    deals = (await client.get("/sandbox/deals", params={"category_id": 20})).json()["deals"]
    assert sorted(d["ID"] for d in deals) == sorted(opened["deals"])
    assert all(isinstance(d["UF_CRM_NPS_SCORE"], int) for d in deals)
    moves = {d["ID"]: d["stage_moves"] for d in deals}
    assert moves[moved] == [{"stage": "C20:WON", "method": "crm.deal.update"}]
    sales = (await client.get("/sandbox/deals", params={"category_id": 0})).json()["deals"]
    won = {d["ID"] for d in sales if d["STAGE_ID"] == "WON"}
    assert won == {d["UF_CRM_NPS_SALE_DEAL"] for d in deals}  # the rest: seeded open sales
