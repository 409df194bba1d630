"""The survey page in headless Chromium against the whole pipeline: a link made by
`nps survey link`, the page filled and submitted by clicks, and each answer followed into the
sandbox portal (the smart-process item) and back through ingest, scoring, router and crm_sync
(scored once, the lead made once); a deal survey's answer into its NPS deal and on to the deal's
stage and the head of sales' task.

Each stack runs the catch-up sweep every 2 s besides the portal's events, so every item the
survey writes is seen by both paths: an answer scored twice would show as a second revision.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import yaml

from services.harness.chaos import fault_stack
from services.harness.scratch import scratch
from services.harness.stack import SURVEY, Stack, running
from services.survey.settings import DEMO_KEY
from services.survey.tokens import LinkSigner
from tests.support.cdp import Chromium
from tests.support.paths import EXAMPLE_CONFIG, ROOT

ARTIFACTS = ROOT / "artifacts" / "e2e"

NPS_TYPE = 1038
DEAL = 2
CONTACT = 5
T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    with (tmp_path / "chromium.log").open("wb") as log:
        chromium = Chromium(tmp_path / "profile", log)
        yield chromium
        chromium.close()


@pytest.fixture
async def survey_stack(stack: Stack) -> Stack:
    await asyncio.to_thread(stack.start, SURVEY)
    return stack


@pytest.fixture
async def binary_stack(
    pg_server: str, amqp_server: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["nps"]["scale"] = "binary"
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    async with (
        scratch("e2e", pg_server, amqp_server, vhost_required=False) as (dsn, amqp_url),
        running(
            fault_stack(dsn, amqp_url, path, ROOT / "artifacts" / "e2e" / request.node.name)
        ) as up,
    ):
        await asyncio.to_thread(up.start, SURVEY)
        yield up


def make_link(stack: Stack, segment: str, lang: str = "en") -> tuple[str, uuid.UUID]:
    """`nps survey link` run as a person would, and the request id its token carries."""
    return link_for(stack, "--contact", str(CONTACT), "--segment", segment, "--lang", lang)


def link_for(stack: Stack, *options: str) -> tuple[str, uuid.UUID]:
    """`nps survey link` with `options`, and the request id its token carries."""
    done = subprocess.run(
        [*(sys.executable, "-m", "services.cli", "survey", "link"), *options],
        env=stack.env(SURVEY),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    check = LinkSigner([DEMO_KEY], 86400).check(link.rsplit("/", 1)[1])
    assert check.request_id is not None
    return link, check.request_id


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 120.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"not reached within {timeout_s:.0f} s")


async def portal_item(stack: Stack, request_id: uuid.UUID, **expected: Any) -> dict[str, Any]:
    """The request's item in the sandbox portal, once it holds `expected`."""

    async def probe() -> dict[str, Any] | None:
        async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=30) as http:
            reply = await http.get("/sandbox/items", params={"entity_type_id": NPS_TYPE})
        items = [
            item
            for item in reply.raise_for_status().json()["items"]
            if item.get("xmlId") == f"b24-nps-survey:{request_id}"
        ]
        assert len(items) <= 1, items
        if items and all(items[0].get(k) == v for k, v in expected.items()):
            found: dict[str, Any] = items[0]
            return found
        return None

    return await eventually(probe)


async def scored(
    stack: Stack, item_id: int, revision: int, entity_type_id: int = NPS_TYPE
) -> list[asyncpg.Record]:
    """The item's (or deal's) current scored answers once they reached `revision`."""

    async def probe() -> list[asyncpg.Record] | None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            rows = await conn.fetch(
                """SELECT sku, score, category, service_request, revision FROM scoring_answers
                   WHERE entity_type_id = $1 AND item_id = $2 AND is_current ORDER BY sku""",
                entity_type_id,
                item_id,
            )
        finally:
            await conn.close()
        return rows if rows and all(row["revision"] == revision for row in rows) else None

    return await eventually(probe)


async def leads_for(stack: Stack, item_id: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=30) as http:
        reply = await http.get("/sandbox/leads")
    return [
        lead
        for lead in reply.raise_for_status().json()["leads"]
        if f"(item {item_id})" in str(lead.get("SOURCE_DESCRIPTION"))
    ]


async def test_equipment_answer_with_the_service_box_then_changed(
    survey_stack: Stack, browser: Chromium
) -> None:
    link, request_id = make_link(survey_stack, "12")
    browser.open(link + "?score=3")
    assert "Laser A" in browser.text
    assert browser.evaluate("document.querySelector('#score-3').checked") is True
    browser.click("label[for=service]")
    browser.type("#comment", "The cooling broke twice")
    browser.submit()
    assert browser.url.endswith("/thanks")
    assert "Thank you for being frank" in browser.text

    item = await portal_item(survey_stack, request_id, UF_CRM_5_SCORE=3)
    assert item["categoryId"] == 12
    assert item["contactId"] == CONTACT
    assert item["UF_CRM_5_TO_SERVICE"] == "Y"
    assert item["UF_CRM_5_COMMENT"] == "The cooling broke twice"
    [answer] = await scored(survey_stack, item["id"], revision=1)
    assert (answer["score"], answer["category"], answer["service_request"]) == (
        3,
        "detractor",
        True,
    )
    service = await eventually(lambda: _some(leads_for(survey_stack, item["id"])), timeout_s=120)
    assert len(service) == 1

    browser.open(link)
    assert "change your answer" in browser.text
    browser.click("label[for=score-10]")
    browser.click("label[for=service]")
    browser.submit()
    assert "glad you are happy" in browser.text
    changed = await portal_item(survey_stack, request_id, UF_CRM_5_SCORE=10)
    assert changed["id"] == item["id"]
    assert changed["UF_CRM_5_TO_SERVICE"] == "N"
    [answer] = await scored(survey_stack, item["id"], revision=2)
    assert (answer["score"], answer["category"]) == (10, "promoter")


async def _some(found: Awaitable[list[T]]) -> list[T] | None:
    rows = await found
    return rows or None


async def test_cosmetics_answer_with_three_products(survey_stack: Stack, browser: Chromium) -> None:
    link, request_id = make_link(survey_stack, "Cosmetics", lang="ru")
    browser.open(link)
    assert "Day cream" in browser.text
    browser.click("label[for=tested_0]")
    browser.click("label[for=score_0-10]")
    browser.click("label[for=tested_1]")
    browser.click("label[for=score_1-6]")
    browser.click("label[for=tested_2]")
    browser.submit()
    assert browser.url.endswith("/thanks")

    item = await portal_item(survey_stack, request_id, UF_CRM_5_SERUM_TESTED="Y")
    assert item["categoryId"] == 10
    assert [item[f"UF_CRM_5_{p}_TESTED"] for p in ("SERUM", "CREAM", "MASK", "PEEL")] == [
        "Y",
        "Y",
        "Y",
        "N",
    ]
    assert (item["UF_CRM_5_SERUM_SCORE"], item["UF_CRM_5_CREAM_SCORE"]) == (10, 6)
    rows = await scored(survey_stack, item["id"], revision=1)
    assert {row["sku"]: row["score"] for row in rows} == {
        "COS-SERUM": 10,
        "COS-CREAM": 6,
        "COS-MASK": None,
    }


async def test_an_expired_link_gets_a_friendly_page_and_stores_nothing(
    survey_stack: Stack, browser: Chromium
) -> None:
    link, request_id = make_link(survey_stack, "12")
    forty_days_ago = time.time() - 40 * 86400
    old = LinkSigner([DEMO_KEY], 86400, clock=lambda: forty_days_ago).sign(request_id)
    expired = link.rsplit("/", 1)[0] + "/" + old
    assert browser.status_of(expired) == 410
    assert "expired" in browser.text
    conn = await asyncpg.connect(survey_stack.database_url)
    stored = await conn.fetchval("SELECT count(*) FROM survey_answers")
    await conn.close()
    assert stored == 0


async def test_a_binary_scale_answer(binary_stack: Stack, browser: Chromium) -> None:
    link, request_id = make_link(binary_stack, "12")
    browser.open(link)
    assert browser.evaluate("document.querySelectorAll('input[type=radio]').length") == 2
    browser.click("label[for=score-1]")
    browser.submit()
    assert "glad you are happy" in browser.text
    item = await portal_item(binary_stack, request_id, UF_CRM_5_SCORE=1)
    [answer] = await scored(binary_stack, item["id"], revision=1)
    assert (answer["score"], answer["category"]) == (1, "promoter")


async def test_a_deal_survey_answer_moves_its_nps_deal_once(
    survey_stack: Stack, browser: Chromium
) -> None:
    async with httpx.AsyncClient(base_url=survey_stack.sandbox_url, timeout=30) as http:
        opened = await http.post(
            "/sandbox/answers", json={"deals": 1, "answer_deals": False, "seed": 7}
        )
    [deal_id] = opened.raise_for_status().json()["deals"]
    link, _ = link_for(survey_stack, "--deal", str(deal_id), "--lang", "en")
    browser.open(link)
    assert "after this purchase" in browser.text  # the deal survey's own question
    assert browser.evaluate("document.querySelector('#service')") is None
    browser.click("label[for=score-2]")
    browser.type("#comment", "Nobody called back")
    browser.submit()
    assert "Thank you for being frank" in browser.text

    async def moved() -> dict[str, Any] | None:
        async with httpx.AsyncClient(base_url=survey_stack.sandbox_url, timeout=30) as http:
            reply = await http.get("/sandbox/deals", params={"category_id": 20})
        deal = next(d for d in reply.raise_for_status().json()["deals"] if d["ID"] == deal_id)
        found: dict[str, Any] = deal
        return found if deal["stage_moves"] else None

    deal = await eventually(moved)
    assert (deal["UF_CRM_NPS_SCORE"], deal["UF_CRM_NPS_COMMENT"]) == (2, "Nobody called back")
    assert [move["stage"] for move in deal["stage_moves"]] == ["C20:LOSE"]
    [answer] = await scored(survey_stack, deal_id, revision=1, entity_type_id=DEAL)
    assert (answer["score"], answer["category"]) == (2, "detractor")

    async def tasks() -> list[dict[str, Any]] | None:
        async with httpx.AsyncClient(base_url=survey_stack.sandbox_url, timeout=30) as http:
            reply = await http.get("/sandbox/tasks")
        return [
            t
            for t in reply.raise_for_status().json()["tasks"]
            if f"D_{deal_id}" in t["UF_CRM_TASK"]
        ] or None

    assert len(await eventually(tasks)) == 1
    await asyncio.sleep(5)  # two sweeps: the deal is seen by both paths, scored still once
    [answer] = await scored(survey_stack, deal_id, revision=1, entity_type_id=DEAL)
    assert len(await eventually(tasks)) == 1
