"""The sandbox portal served by a real uvicorn on a free port: events reach a real handler,
hung requests time clients out but still happen, the state file outlives the server."""

import asyncio
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.sandbox.app import SalesClosing, create_app
from services.sandbox.limits import Limits
from services.sandbox.persistence import load_portal
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from tests.support import serving

NPS = 1038
CONFIG = Path(__file__).parents[2] / "config" / "portal.example.yaml"


class Receiver:
    """A tiny event handler standing in for ingest."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = asyncio.Event()
        self.app = Starlette(routes=[Route("/hook", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> PlainTextResponse:
        self.bodies.append(await request.body())
        self.arrived.set()
        return PlainTextResponse("ok")


async def test_item_add_event_reaches_a_real_handler_and_state_survives(tmp_path: Path) -> None:
    state_file = tmp_path / "sandbox.json"
    portal = SandboxPortal(secret="w3bh00ks3cret")
    seed_demo(portal, CONFIG, contacts=5)
    receiver = Receiver()
    async with (
        serving(receiver.app) as handler_url,
        serving(create_app(portal, state_file=state_file)) as sandbox_url,
        httpx.AsyncClient(base_url=sandbox_url) as client,
    ):
        await client.post("/sandbox/handlers", json={"url": f"{handler_url}/hook"})
        response = await client.post(
            "/rest/1/w3bh00ks3cret/crm.item.add.json",
            json={"entityTypeId": NPS, "fields": {"categoryId": 12, "contactId": 2}},
        )
        item_id = response.json()["result"]["item"]["id"]
        async with asyncio.timeout(5):
            await receiver.arrived.wait()
    form = dict(parse_qsl(receiver.bodies[0].decode()))
    assert form["event"] == "ONCRMDYNAMICITEMADD"
    assert form["data[FIELDS][ID]"] == str(item_id)
    assert form["data[FIELDS][ENTITY_TYPE_ID]"] == str(NPS)
    assert form["auth[application_token]"] == portal.application_token
    assert portal.deliveries[0].status == "delivered"
    reloaded = load_portal(state_file)
    assert reloaded.secret == "w3bh00ks3cret"
    assert reloaded.crm.get(NPS, item_id) == portal.crm.get(NPS, item_id)


async def test_a_hung_request_times_the_client_out_but_still_happens() -> None:
    portal = SandboxPortal(secret="w3bh00ks3cret", limits=Limits.off())
    async with (
        serving(create_app(portal)) as sandbox_url,
        httpx.AsyncClient(base_url=sandbox_url) as client,
    ):
        await client.put("/sandbox/faults", json={"hang_count": 1, "hang_s": 0.5})
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/rest/1/w3bh00ks3cret/crm.lead.add",
                json={"fields": {"TITLE": "t", "ORIGIN_ID": "action-7"}},
                timeout=0.1,
            )
        await asyncio.sleep(0.8)
        leads = (await client.get("/sandbox/leads")).json()["leads"]
    assert [lead["ORIGIN_ID"] for lead in leads] == ["action-7"]


async def test_sales_close_on_a_timer_and_their_updates_reach_the_handler() -> None:
    portal = SandboxPortal(secret="w3bh00ks3cret", limits=Limits.off())
    seed_demo(portal, CONFIG, contacts=10)
    receiver = Receiver()
    closing = SalesClosing(count=2, every_s=0.05)
    async with serving(receiver.app) as handler_url:
        portal.register_handler(f"{handler_url}/hook", ["ONCRMDEALUPDATE"])
        async with serving(create_app(portal, closing=closing)):
            async with asyncio.timeout(10):
                while len(receiver.bodies) < 2:
                    await receiver.arrived.wait()
                    receiver.arrived.clear()
    closed = [int(dict(parse_qsl(body.decode()))["data[FIELDS][ID]"]) for body in receiver.bodies]
    assert all(portal.crm.records(2)[deal_id]["STAGE_ID"] == "WON" for deal_id in closed)
