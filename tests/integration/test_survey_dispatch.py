"""The survey process serving dispatch, as `nps run survey` runs it (a real port, the real
RabbitMQ and PostgreSQL): `survey.requested` in, the request stored and `survey.ready` out with a
link that works on the page; a redelivery changes nothing; requests the portal YAML cannot serve
are dead-lettered; the first view of a form publishes `survey.opened` once; the opt-out page asks
on GET and records on POST, publishing `survey.opted_out` once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel

from services.survey.app import CONTENT_SECURITY_POLICY, create_app
from services.survey.main import serve_survey
from services.survey.settings import SurveySettings
from shared.events import PortalRef, SurveyRequested
from shared.messaging import REASON_HEADER
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.settings import Settings
from shared.topology import SURVEY_REQUESTS
from tests.support import Captured, capture, publish_raw
from tests.support.survey import DAY, EXAMPLE_PAGE, KEYS, setup_for

STARTUP_S = 30.0
LINK_DAYS = 30
KEYS_TOPICS = ("survey.ready", "survey.opened", "survey.opted_out")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Survey:
    """The running survey process: its address and an HTTP client of a browser's own."""

    base: str
    http: httpx.AsyncClient


@pytest.fixture
async def survey(settings: Settings, channel: AbstractChannel) -> AsyncIterator[Survey]:
    port = free_port()
    page = SurveySettings(
        host="127.0.0.1",
        port=port,
        public_url=None,
        keys=",".join(KEYS),
        link_days=LINK_DAYS,
        config=EXAMPLE_PAGE,
        rate_per_minute=1000,
        _env_file=None,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve_survey(settings, stop, page))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with asyncio.timeout(STARTUP_S):
            while True:
                assert not task.done(), "the survey process stopped while starting"
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        yield Survey(base, http)
    stop.set()
    await asyncio.wait_for(task, 30)


def requested(**changes: Any) -> SurveyRequested:
    fields: dict[str, Any] = {
        "correlation_id": f"dispatch-{uuid.uuid4().hex[:8]}",
        "request_id": uuid.uuid4(),
        "portal": PortalRef(),
        "contact_id": 42,
        "category_id": 12,
        "sku": "EQ-LASER-A",
        "lang": "en",
    }
    return SurveyRequested(**{**fields, **changes})


async def send(channel: AbstractChannel, event: SurveyRequested) -> None:
    await publish_raw(channel, "survey.requested", event.model_dump(mode="json"))


async def about(
    captured: Captured, request_id: uuid.UUID, routing_key: str, count: int = 1
) -> list[dict[str, Any]]:
    """The `routing_key` events about `request_id`, once `count` have arrived (the relay also
    publishes what earlier tests left in the outbox)."""
    seen = 1
    while True:
        await captured.wait_for(seen)
        mine = [
            body
            for key, body in zip(captured.routing_keys, captured.bodies, strict=True)
            if key == routing_key and body["request_id"] == str(request_id)
        ]
        if len(mine) >= count:
            return mine
        seen = len(captured.messages) + 1


async def settled(channel: AbstractChannel, captured: Captured) -> None:
    """A sentinel request's `survey.ready` has arrived: whatever was queued before it has been
    published by now."""
    sentinel = requested()
    await send(channel, sentinel)
    await about(captured, sentinel.request_id, "survey.ready")


async def row(pool: asyncpg.Pool, request_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        """SELECT contact_id, category_id, sku, lang, deal_id, portal, correlation_id,
                  opened_at, opted_out_at
           FROM survey_requests WHERE request_id = $1""",
        request_id,
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def test_a_request_is_stored_and_its_link_works_on_the_page(
    survey: Survey, channel: AbstractChannel, pool: asyncpg.Pool
) -> None:
    event = requested()
    async with capture(channel, *KEYS_TOPICS) as captured:
        before = datetime.now(UTC)
        await send(channel, event)
        [ready] = await about(captured, event.request_id, "survey.ready")
        after = datetime.now(UTC)
        stored = await row(pool, event.request_id)
        assert stored is not None
        assert (stored["contact_id"], stored["category_id"], stored["sku"], stored["lang"]) == (
            42,
            12,
            "EQ-LASER-A",
            "en",
        )
        assert (stored["portal"], stored["correlation_id"]) == ("default", event.correlation_id)
        assert stored["opened_at"] is None
        assert ready["url"].startswith(f"{survey.base}/s/")
        assert ready["optout_url"] == ready["url"] + "/optout"
        assert ready["company"] == "Demo Clinic Supply"
        assert re.fullmatch(rf"{re.escape(survey.base)}/logo/[0-9a-f]{{64}}", ready["logo_url"])
        expires = datetime.fromisoformat(ready["expires_at"])
        link_age = timedelta(days=LINK_DAYS)
        assert before + link_age - timedelta(seconds=1) <= expires <= after + link_age
        assert ready["correlation_id"] == event.correlation_id
        assert ready["causation_id"] == str(event.event_id)
        logo = await survey.http.get(ready["logo_url"].removeprefix(survey.base))
        assert logo.status_code == 200
        kept = await pool.fetchval(  # kept for the e-mail, whatever becomes of the page's logo
            "SELECT content FROM survey_logos WHERE sha256 = $1", ready["logo_url"][-64:]
        )
        assert kept == logo.content

        page = await survey.http.get(ready["url"], params={"score": "7"})
        assert page.status_code == 200
        assert "Laser A" in page.text
        assert 'id="score-7" name="score" value="7" checked' in page.text
        assert page.text.count(" checked") == 1
        assert f'href="/s/{ready["url"].rsplit("/", 1)[1]}/optout"' in page.text
        [opened] = await about(captured, event.request_id, "survey.opened")
        stored = await row(pool, event.request_id)
        assert stored is not None
        assert stored["opened_at"] is not None
        assert datetime.fromisoformat(opened["opened_at"]) == stored["opened_at"]
        assert opened["correlation_id"] == event.correlation_id

        again = await survey.http.get(ready["url"], params={"score": "3"})
        assert 'id="score-3" name="score" value="3" checked' in again.text
        form = {"csrf": csrf_of(again.text), "score": "9"}
        assert (await survey.http.post(ready["url"], data=form)).status_code == 303
        await settled(channel, captured)
        assert len(await about(captured, event.request_id, "survey.opened")) == 1
        assert (await row(pool, event.request_id)) == stored
        answer = await pool.fetchval(
            "SELECT answer->'scores'->>'EQ-LASER-A' FROM survey_answers WHERE request_id = $1",
            event.request_id,
        )
        assert answer == "9"


async def test_a_deal_surveys_request_shows_its_deal_form(
    survey: Survey, channel: AbstractChannel, pool: asyncpg.Pool
) -> None:
    event = requested(category_id=20, sku=None, deal_id=345, lang="ru")
    async with capture(channel, "survey.ready") as captured:
        await send(channel, event)
        [ready] = await about(captured, event.request_id, "survey.ready")
    stored = await row(pool, event.request_id)
    assert stored is not None
    assert (stored["category_id"], stored["sku"], stored["deal_id"]) == (20, "DEAL-SALES", 345)
    page = await survey.http.get(ready["url"], params={"score": "10"})
    assert page.status_code == 200
    assert 'lang="ru"' in page.text
    assert "после этой покупки" in page.text
    assert 'id="score-10" name="score" value="10" checked' in page.text
    assert 'name="service"' not in page.text


async def test_a_redelivered_request_stores_and_publishes_nothing_new(
    survey: Survey, channel: AbstractChannel, pool: asyncpg.Pool
) -> None:
    event = requested()
    async with capture(channel, "survey.ready") as captured:
        await send(channel, event)
        [ready] = await about(captured, event.request_id, "survey.ready")
        await send(channel, event)
        retold = requested(request_id=event.request_id, correlation_id="dispatch-again")
        await send(channel, retold)
        await settled(channel, captured)
        assert await about(captured, event.request_id, "survey.ready") == [ready]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM survey_requests WHERE request_id = $1", event.request_id
        )
        == 1
    )
    stored = await row(pool, event.request_id)
    assert stored is not None
    assert stored["correlation_id"] == event.correlation_id
    dlq = await channel.get_queue(SURVEY_REQUESTS.dlq)
    assert await dlq.get(fail=False) is None


async def dead_letter(channel: AbstractChannel) -> str:
    """The reason of the next message in `survey.requests.dlq` (it is taken off)."""
    dlq = await channel.get_queue(SURVEY_REQUESTS.dlq)
    message = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            while message is None:
                message = await dlq.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
    assert message is not None, f"nothing reached {SURVEY_REQUESTS.dlq}"
    await message.ack()
    return str(message.headers[REASON_HEADER])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"category_id": 99}, "segment 99 is not in survey.segments; known: 10 (Cosmetics)"),
        ({"sku": "EQ-CRYO-B"}, "segment 12 asks about EQ-LASER-A; sku EQ-CRYO-B is not it"),
        ({"category_id": 10, "sku": "COS-SERUM"}, "segment 10 is a cosmetics segment"),
        ({"category_id": 21, "sku": None, "deal_id": 5}, "deal category 21 is no deal survey's"),
    ],
)
async def test_a_request_the_portal_yaml_cannot_serve_is_dead_lettered(
    survey: Survey,
    channel: AbstractChannel,
    pool: asyncpg.Pool,
    changes: dict[str, Any],
    reason: str,
) -> None:
    event = requested(**changes)
    await send(channel, event)
    told = await dead_letter(channel)
    assert told.startswith(f"survey.requested {event.request_id}: ")
    assert reason in told
    assert await row(pool, event.request_id) is None


async def test_a_stored_request_id_with_other_contents_is_dead_lettered(
    survey: Survey, channel: AbstractChannel, pool: asyncpg.Pool
) -> None:
    event = requested()
    async with capture(channel, "survey.ready") as captured:
        await send(channel, event)
        await about(captured, event.request_id, "survey.ready")
    await send(channel, requested(request_id=event.request_id, contact_id=987654321, lang="ru"))
    told = await dead_letter(channel)
    assert "stored already with another contact_id, lang; nothing was changed" in told
    assert "987654321" not in told  # the values are not repeated, only the fields named
    stored = await row(pool, event.request_id)
    assert stored is not None
    assert (stored["contact_id"], stored["lang"]) == (42, "en")


async def test_opting_out_asks_on_get_and_records_once_on_post(
    survey: Survey, channel: AbstractChannel, pool: asyncpg.Pool
) -> None:
    event = requested(lang="ru")
    async with capture(channel, *KEYS_TOPICS) as captured:
        await send(channel, event)
        [ready] = await about(captured, event.request_id, "survey.ready")
        optout = ready["optout_url"]
        question = await survey.http.get(optout)
        assert question.status_code == 200
        assert question.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "<script" not in question.text
        assert "Опросы компании Demo Clinic Supply" in question.text
        assert "Вы больше не будете получать от нас NPS-опросы." in question.text
        assert "присылать мне опросы</button>" in question.text
        assert f'action="{optout.removeprefix(survey.base)}"' in question.text
        assert (await survey.http.get(optout)).status_code == 200
        refused = await survey.http.post(optout, data={"csrf": "forged"})
        assert refused.status_code == 403
        assert 'role="alert"' in refused.text
        await settled(channel, captured)
        stored = await row(pool, event.request_id)
        assert stored is not None
        assert stored["opted_out_at"] is None
        assert stored["opened_at"] is None
        assert await about(captured, event.request_id, "survey.opted_out", 0) == []

        form = {"csrf": csrf_of(question.text)}
        done = await survey.http.post(optout, data=form)
        assert done.status_code == 303
        assert done.headers["location"] == optout.removeprefix(survey.base)
        [out] = await about(captured, event.request_id, "survey.opted_out")
        assert (out["contact_id"], out["correlation_id"]) == (42, event.correlation_id)
        stored = await row(pool, event.request_id)
        assert stored is not None
        assert stored["opted_out_at"] == datetime.fromisoformat(out["opted_out_at"])
        page = await survey.http.get(optout)
        assert "Готово. Вы больше не будете получать от нас NPS-опросы." in page.text
        assert "<form" not in page.text
        assert (await survey.http.post(optout, data=form)).status_code == 303
        await settled(channel, captured)
        assert len(await about(captured, event.request_id, "survey.opted_out")) == 1
        assert await row(pool, event.request_id) == stored


@pytest.mark.parametrize(("age_s", "tamper", "status"), [(31 * DAY, False, 410), (0, True, 404)])
async def test_expired_and_tampered_opt_out_links_store_nothing(
    pool: asyncpg.Pool,
    portal_config: PortalConfig,
    age_s: int,
    tamper: bool,
    status: int,
) -> None:
    fresh = setup_for(portal_config)
    later = setup_for(portal_config, now=1_800_000_000.0 + age_s)
    request = requested()
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO survey_requests (request_id, portal, contact_id, category_id, sku, lang)
               VALUES ($1, 'default', 42, 12, 'EQ-LASER-A', 'en')""",
            request.request_id,
        )
    link = "/s/" + fresh.signer.sign(request.request_id) + "/optout"
    if tamper:
        link = link.replace(".", ".A", 1)
    apps = [create_app(pool, Outbox(), setup) for setup in (fresh, later)]
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(apps[0]), base_url="http://t") as first,
        httpx.AsyncClient(transport=httpx.ASGITransport(apps[1]), base_url="http://t") as second,
    ):
        csrf = "x" if tamper else csrf_of((await first.get(link)).text)
        second.cookies = first.cookies
        for response in (
            await second.get(link, headers={"accept-language": "en"}),
            await second.post(link, data={"csrf": csrf}, headers={"accept-language": "en"}),
        ):
            assert response.status_code == status
            assert "<h1>" in response.text
            assert "link" in response.text
    stored = await row(pool, request.request_id)
    assert stored is not None
    assert stored["opted_out_at"] is None
