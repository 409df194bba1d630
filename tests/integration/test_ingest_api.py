"""The ingest HTTP endpoints against real PostgreSQL and RabbitMQ (the app driven in-process)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from prometheus_client import generate_latest
from pydantic import SecretStr

from services.ingest.api import create_app
from shared.db import create_pool
from shared.messaging import make_broker
from shared.outbox import Outbox, OutboxRelay
from shared.portal_config import PortalConfig
from shared.settings import Settings
from tests.support import capture, forget_served_portal

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ingest.md"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def event_body(item_id: object = 24, member_id: str = "m", **overrides: str | None) -> str:
    values: dict[str, Any] = {
        "event": "ONCRMDYNAMICITEMADD",
        "event_handler_id": "3",
        "data[FIELDS][ID]": item_id,
        "data[FIELDS][ENTITY_TYPE_ID]": "1038",
        "ts": "1766047124",
        "auth[domain]": "portal.example",
        "auth[member_id]": member_id,
        "auth[application_token]": "sandbox-app-token",
    }
    values.update(overrides)
    return urlencode({k: v for k, v in values.items() if v is not None})


@pytest.fixture(autouse=True)
async def new_deployment(pool: asyncpg.Pool) -> None:
    """Each test is a deployment whose portal ingest has not learned yet."""
    await forget_served_portal(pool)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")


@pytest.fixture
async def ingest(
    settings: Settings,
    portal_config: PortalConfig,
    pool: asyncpg.Pool,
) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings, portal_config, pool, Outbox())) as client:
        yield client


async def stored(pool: asyncpg.Pool, member_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM ingest_events WHERE member_id = $1 ORDER BY id", member_id
    )


async def pending(pool: asyncpg.Pool, member_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT body FROM outbox WHERE routing_key = 'webhook.received' AND published_at IS NULL"
    )
    bodies = [json.loads(row["body"]) for row in rows]
    return [body for body in bodies if body["portal"]["member_id"] == member_id]


async def test_event_is_stored_and_queued_before_the_200_with_the_broker_down(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    member = uuid.uuid4().hex
    response = await ingest.post(
        "/webhooks/bitrix24", content=event_body(member_id=member), headers=FORM
    )
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    rows = await stored(pool, member)
    assert [(r["event"], r["entity_type_id"], r["item_id"], r["ts"]) for r in rows] == [
        ("ONCRMDYNAMICITEMADD", 1038, 24, 1766047124)
    ]
    assert "application_token" not in rows[0]["payload"]
    queued = await pending(pool, member)
    assert len(queued) == 1
    assert queued[0]["event_id"] == response.json()["event_id"]


async def test_relay_publishes_what_waited_once_the_broker_is_back(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool, amqp_url: str, channel: AbstractChannel
) -> None:
    member = uuid.uuid4().hex
    response = await ingest.post(
        "/webhooks/bitrix24", content=event_body(item_id=51, member_id=member), headers=FORM
    )
    assert response.json()["status"] == "accepted"
    assert len(await pending(pool, member)) == 1
    broker = make_broker(amqp_url)
    await broker.connect()
    try:
        async with capture(channel, "webhook.received") as captured:
            relay = OutboxRelay(pool, broker)
            while (await relay.publish_pending())[0]:
                pass
            await captured.wait_for(1)
            mine = [b for b in captured.bodies if b["portal"]["member_id"] == member]
    finally:
        await broker.stop()
    assert len(mine) == 1
    assert (mine[0]["source"], mine[0]["item_id"], mine[0]["event"]) == (
        "event",
        51,
        "ONCRMDYNAMICITEMADD",
    )
    assert mine[0]["event_id"] == response.json()["event_id"]
    assert await pending(pool, member) == []


async def test_duplicate_event_is_stored_and_published_once(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    member = uuid.uuid4().hex
    body = event_body(item_id=7, member_id=member)
    first = await ingest.post("/webhooks/bitrix24", content=body, headers=FORM)
    again = await ingest.post("/webhooks/bitrix24", content=body, headers=FORM)
    per_type = await ingest.post(
        "/webhooks/bitrix24",
        content=event_body(item_id=7, member_id=member, event="onCrmDynamicItemAdd_1038"),
        headers=FORM,
    )
    later = await ingest.post(
        "/webhooks/bitrix24",
        content=event_body(item_id=7, member_id=member, ts="1766047999"),
        headers=FORM,
    )
    assert [r.json()["status"] for r in (first, again, per_type, later)] == [
        "accepted",
        "duplicate",
        "duplicate",
        "accepted",
    ]
    assert [r["ts"] for r in await stored(pool, member)] == [1766047124, 1766047999]
    assert len(await pending(pool, member)) == 2


async def test_wrong_or_missing_token_is_401(ingest: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    member = uuid.uuid4().hex
    for token in ("wrong", None):
        body = event_body(member_id=member, **{"auth[application_token]": token})
        response = await ingest.post("/webhooks/bitrix24", content=body, headers=FORM)
        assert response.status_code == 401
        assert response.json()["field"] == "auth[application_token]"
    assert await stored(pool, member) == []


async def test_rotated_second_token_is_accepted(
    settings: Settings, portal_config: PortalConfig, pool: asyncpg.Pool
) -> None:
    rotated = settings.model_copy(update={"bitrix24_app_token": SecretStr("old-token, new-token")})
    member = uuid.uuid4().hex
    async with client_for(create_app(rotated, portal_config, pool, Outbox())) as client:
        statuses: list[int] = []
        for token in ("new-token", "old-token", "sandbox-app-token"):
            body = event_body(
                member_id=member, ts=str(len(statuses) + 1), **{"auth[application_token]": token}
            )
            statuses.append(
                (await client.post("/webhooks/bitrix24", content=body, headers=FORM)).status_code
            )
    assert statuses == [200, 200, 401]


async def test_a_real_portal_without_token_refuses_to_start(
    settings: Settings, portal_config: PortalConfig, pool: asyncpg.Pool
) -> None:
    real = settings.model_copy(
        update={"bitrix24_webhook_url": SecretStr("https://portal.example/rest/1/abc/")}
    )
    with pytest.raises(ValueError, match="BITRIX24_APP_TOKEN is required"):
        create_app(real, portal_config, pool, Outbox())


async def test_foreign_portal_is_403(
    settings: Settings, portal_config: PortalConfig, pool: asyncpg.Pool
) -> None:
    mine = uuid.uuid4().hex
    config = portal_config.model_copy(
        update={"portal": portal_config.portal.model_copy(update={"member_id": mine})}
    )
    async with client_for(create_app(settings, config, pool, Outbox())) as client:
        foreign = await client.post(
            "/webhooks/bitrix24", content=event_body(member_id="other"), headers=FORM
        )
        own = await client.post(
            "/webhooks/bitrix24", content=event_body(member_id=mine), headers=FORM
        )
    assert foreign.status_code == 403
    assert foreign.json() == {
        "error": "event from a portal other than the configured one",
        "field": "auth[member_id]",
        "expected": "portal.member_id",
    }
    assert own.status_code == 200


def robot_query(member_id: str, item_id: int = 77) -> str:
    return urlencode(
        {
            "application_token": "sandbox-app-token",
            "member_id": member_id,
            "id": str(item_id),
            "category_id": "12",
            "UF_CRM_5_SCORE": "3",
            "updated_time": "2024-07-22T18:05:00+03:00",
        }
    )


LEARNED_403 = {
    "error": "event from a portal other than the one this deployment serves",
    "expected": "the member_id learned from the deployment's first event"
    " (`nps config check --portal`)",
}


async def test_unpinned_deployment_serves_the_portal_of_its_first_event(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    mine, invented = uuid.uuid4().hex, uuid.uuid4().hex
    first = await ingest.post(
        "/webhooks/bitrix24", content=event_body(item_id=31, member_id=mine), headers=FORM
    )
    event = await ingest.post(
        "/webhooks/bitrix24", content=event_body(item_id=31, member_id=invented), headers=FORM
    )
    robot = await ingest.post(f"/webhooks/bitrix24/robot?{robot_query(invented)}")
    assert first.json()["status"] == "accepted"
    assert (event.status_code, event.json()) == (403, {**LEARNED_403, "field": "auth[member_id]"})
    assert (robot.status_code, robot.json()) == (403, {**LEARNED_403, "field": "member_id"})
    assert await stored(pool, invented) == []
    assert await pending(pool, invented) == []
    assert await pool.fetchval("SELECT member_id FROM ingest_portal") == mine


async def test_the_learned_portal_is_kept_across_a_restart(
    settings: Settings, portal_config: PortalConfig, pool: asyncpg.Pool
) -> None:
    mine, invented = uuid.uuid4().hex, uuid.uuid4().hex
    async with client_for(create_app(settings, portal_config, pool, Outbox())) as before:
        learned = await before.post(f"/webhooks/bitrix24/robot?{robot_query(mine)}")
    async with client_for(create_app(settings, portal_config, pool, Outbox())) as after:
        foreign = await after.post(
            "/webhooks/bitrix24", content=event_body(member_id=invented), headers=FORM
        )
        own = await after.post(
            "/webhooks/bitrix24", content=event_body(member_id=mine), headers=FORM
        )
    assert learned.json()["status"] == "accepted"
    assert foreign.status_code == 403
    assert own.json()["status"] == "accepted"
    assert await stored(pool, invented) == []


async def test_of_first_events_from_several_portals_at_once_exactly_one_wins(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    members = [uuid.uuid4().hex for _ in range(6)]
    responses = await asyncio.gather(
        *(
            ingest.post(f"/webhooks/bitrix24/robot?{robot_query(member)}")
            if i % 2
            else ingest.post(
                "/webhooks/bitrix24", content=event_body(member_id=member), headers=FORM
            )
            for i, member in enumerate(members)
        )
    )
    winners = [m for m, r in zip(members, responses, strict=True) if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert sorted(r.status_code for r in responses) == [200, 403, 403, 403, 403, 403]
    assert await pool.fetchval("SELECT member_id FROM ingest_portal") == winners[0]
    for member in members:
        assert len(await stored(pool, member)) == (member in winners)


async def test_a_first_event_without_member_id_is_403_and_teaches_nothing(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    body = event_body().replace("&auth%5Bmember_id%5D=m&", "&")
    assert "member_id" not in body
    response = await ingest.post("/webhooks/bitrix24", content=body, headers=FORM)
    assert (response.status_code, response.json()["field"]) == (403, "auth[member_id]")
    assert await pool.fetchval("SELECT count(*) FROM ingest_portal") == 0


@pytest.mark.parametrize(
    ("content", "headers", "status", "field"),
    [
        (event_body(item_id=None), FORM, 400, "data[FIELDS][ID]"),
        (event_body(item_id="12a"), FORM, 400, "data[FIELDS][ID]"),
        (event_body(event=None), FORM, 400, "event"),
        ("event=ONCRMDYNAMICITEMADD&data%5BFIELDS%5D%5BID%5D=1%ZZ", FORM, 400, "body"),
        (event_body(), {"Content-Type": "application/json"}, 415, "Content-Type"),
        (event_body(), {}, 415, "Content-Type"),
        (event_body() + "&pad=" + "x" * 70_000, FORM, 413, "body"),
    ],
    ids=["no-id", "non-numeric-id", "no-event", "broken-percent", "json", "no-type", "too-big"],
)
async def test_bad_requests_are_clear_4xx(
    ingest: httpx.AsyncClient, content: str, headers: dict[str, str], status: int, field: str
) -> None:
    response = await ingest.post("/webhooks/bitrix24", content=content, headers=headers)
    assert response.status_code == status
    body = response.json()
    assert body["field"] == field
    assert body["error"]
    assert body["expected"]


async def test_oversized_body_without_content_length_is_413(ingest: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    response = await ingest.post("/webhooks/bitrix24", content=chunks(), headers=FORM)
    assert response.status_code == 413


async def test_other_events_are_ignored(ingest: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    member = uuid.uuid4().hex
    deal = await ingest.post(
        "/webhooks/bitrix24",
        content=event_body(member_id=member, event="ONCRMDEALDELETE"),
        headers=FORM,
    )
    other_type = await ingest.post(
        "/webhooks/bitrix24",
        content=event_body(member_id=member, **{"data[FIELDS][ENTITY_TYPE_ID]": "1040"}),
        headers=FORM,
    )
    assert deal.json() == {
        "status": "ignored",
        "reason": "ONCRMDEALDELETE is not an NPS item add/update event",
    }
    assert other_type.json()["status"] == "ignored"
    assert await stored(pool, member) == []


async def test_robot_call_carries_the_item_fields(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    member = uuid.uuid4().hex
    query = urlencode(
        {
            "application_token": "sandbox-app-token",
            "member_id": member,
            "id": "77",
            "category_id": "12",
            "contact_id": "5",
            "UF_CRM_5_SCORE": "3",
            "UF_CRM_5_TO_SERVICE": "Y",
            "updated_time": "2024-07-22T18:05:00+03:00",
        }
    )
    response = await ingest.post(f"/webhooks/bitrix24/robot?{query}")
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    [queued] = await pending(pool, member)
    assert (queued["source"], queued["event"], queued["item_id"]) == ("robot", "ROBOT", 77)
    assert queued["fields"]["UF_CRM_5_SCORE"] == "3"
    assert queued["fields"]["contactId"] == "5"
    assert "application_token" not in json.dumps(queued)


async def test_robot_form_body_and_token_rules(ingest: httpx.AsyncClient) -> None:
    form = urlencode(
        {
            "auth[application_token]": "sandbox-app-token",
            "auth[member_id]": uuid.uuid4().hex,
            "id": "78",
            "category_id": "10",
        }
    )
    accepted = await ingest.post("/webhooks/bitrix24/robot", content=form, headers=FORM)
    wrong = await ingest.post("/webhooks/bitrix24/robot?application_token=no&id=1&category_id=10")
    json_body = await ingest.post(
        "/webhooks/bitrix24/robot?application_token=sandbox-app-token",
        content='{"id": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert accepted.status_code == 200
    assert (wrong.status_code, wrong.json()["field"]) == (401, "application_token")
    assert json_body.status_code == 415


async def test_curl_example_from_the_docs_is_accepted(
    ingest: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    match = re.search(r"--data '([^']+)'", DOCS.read_text(encoding="utf-8"))
    assert match is not None, "docs/ingest.md lost its curl example"
    example = match.group(1)
    assert "auth%5Bapplication_token%5D=sandbox-app-token" in example
    member = uuid.uuid4().hex
    body = example.replace("d897063e1ce7c5eb9f04b9751eef5915", member)
    response = await ingest.post("/webhooks/bitrix24", content=body, headers=FORM)
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    [row] = await stored(pool, member)
    assert (row["event"], row["item_id"], row["entity_type_id"]) == ("ONCRMDYNAMICITEMADD", 1, 1038)


async def test_database_down_is_503_not_500(
    settings: Settings, portal_config: PortalConfig, pg_dsn: str
) -> None:
    closed = await create_pool(pg_dsn, max_size=1)
    await closed.close()
    async with client_for(create_app(settings, portal_config, closed, Outbox())) as client:
        response = await client.post("/webhooks/bitrix24", content=event_body(), headers=FORM)
    assert response.status_code == 503
    assert response.json()["expected"] == "retry later"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
async def test_the_webhook_port_serves_only_the_webhooks(
    ingest: httpx.AsyncClient, path: str
) -> None:
    """Health and metrics are on INGEST_HEALTH_PORT, not on the port the internet reaches."""
    assert (await ingest.get(path)).status_code == 404


async def test_refusals_are_counted_in_the_metrics(ingest: httpx.AsyncClient) -> None:
    await ingest.post(
        "/webhooks/bitrix24", content="event=x", headers={"Content-Type": "text/plain"}
    )
    metrics = generate_latest().decode()
    assert 'nps_ingest_webhooks_total{endpoint="event",outcome="unsupported_media_type"}' in metrics
