"""Dispatch end to end, every part its own process: sales won in the sandbox portal → the NPS deals
crm_sync creates → the e-mails in the sandbox's local inbox → the links opened and answered on the
survey page → the scores written into the NPS deals and the deals moved → the register shows
sent, opened and answered. Driven by `nps demo`'s dispatch part, checked here on its own against
the portal, the inbox and the register (the unanswered path moves a clock: integration tests).
Then the follow-up part: leads and tasks created for the answers, some closed or taken in work in
the sandbox and seen by dispatch through the portal's update events; and the dashboard (the
reports app on the same database) shows the demo's data on every page a new user opens."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx

from services.harness.chaos import dlq_total
from services.harness.stack import DISPATCH, SURVEY, Stack
from services.ops.demo import run_demo
from services.ops.demo_plan import CUSTOMERS
from services.reports.app import create_app
from services.reports.followup import FOLLOWUP_CSV_HEADER
from shared.portal_config import PortalConfig
from shared.settings import Settings
from tests.support.dashboard import figures

SALES = 5
TOKEN = "e2e-dashboard-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def dashboard(stack: Stack, config: PortalConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The reports app on the stack's database, as `nps run reports` builds it."""
    app = create_app(
        stack.database_url,
        TOKEN,
        portal_url=stack.webhook_url,
        timezone=config.portal.timezone,
        dispatch=config.dispatch,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as http:
            yield http


async def _page(http: httpx.AsyncClient, path: str, **params: str) -> str:
    answer = await http.get(path, params=params, headers=BEARER)
    assert answer.status_code == 200, (path, answer.text[:500])
    return answer.text


async def _call(http: httpx.AsyncClient, stack: Stack, method: str, **params: Any) -> Any:
    reply = await http.post(f"{stack.webhook_url}{method}.json", json=params)
    return reply.raise_for_status().json()["result"]


async def test_a_won_sale_is_asked_by_email_answered_and_written_into_its_nps_deal(
    stack: Stack, portal_config: PortalConfig
) -> None:
    await asyncio.gather(
        asyncio.to_thread(stack.start, SURVEY), asyncio.to_thread(stack.start, DISPATCH)
    )
    settings = Settings(
        database_url=stack.database_url,
        rabbitmq_url=stack.rabbitmq_url,
        sandbox_port=stack.ports["sandbox"],
        dispatch_health_port=stack.ports[DISPATCH],
        nps_config=stack.config,
        _env_file=None,
    )
    lines: list[str] = []
    summary = await run_demo(settings, 3, timeout_s=150, echo=lines.append, sales=SALES)

    assert summary["deals"] == 0, "dispatch opens the NPS deals: none answered by hand"
    shown = summary["dispatch"]
    rows: list[dict[str, Any]] = shown["requests"]
    deal_survey = portal_config.deal_surveys[0]
    by_id = {str(row["request_id"]): row for row in rows}
    assert len(shown["sales"]) == SALES
    assert {row["sale_deal_id"] for row in rows} == set(shown["sales"])
    asked = [row for row in rows if row["kind"] == "deal" and row["state"] != "skipped"]
    assert len(asked) >= len(CUSTOMERS) + 1, [(r["state"], r["reason"]) for r in rows]

    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=30) as http:
        inbox = (await http.get("/inbox.json")).raise_for_status().json()["messages"]
        for row in rows:
            sale = (await http.get(f"/sandbox/deals/{row['sale_deal_id']}")).json()["deal"]
            assert (sale["CATEGORY_ID"], sale["STAGE_SEMANTIC_ID"]) == (0, "S")
            if row["state"] == "skipped":
                assert row["sends"] == 0
                continue
            # One e-mail per request, to the sale's customer.
            mails = [m for m in inbox if f"<{row['request_id']}." in (m["message_id"] or "")]
            assert len(mails) == 1, (row["survey"], row["state"], len(mails))
            contact = await _call(http, stack, "crm.contact.get", id=sale["CONTACT_ID"])
            assert mails[0]["envelope_to"] == [contact["EMAIL"][0]["VALUE"]]
            assert row["contact_id"] == int(sale["CONTACT_ID"])
            if row["kind"] != "deal":
                continue
            # The NPS deal crm_sync created for the sale, once, in the deal survey's funnel.
            nps = (await http.get(f"/sandbox/deals/{row['nps_deal_id']}")).json()
            deal = nps["deal"]
            assert deal["CATEGORY_ID"] == deal_survey.category_id
            assert deal["CONTACT_ID"] == sale["CONTACT_ID"]
            assert deal[deal_survey.sale_deal_field] == row["sale_deal_id"]
            answered = shown["answered"].get(str(row["request_id"]))
            if answered is None:
                assert deal["STAGE_SEMANTIC_ID"] == "P"
                assert deal.get(deal_survey.score_field) in (None, "")
                continue
            # The customer's answer in the deal, and the deal moved by its category.
            _, score = answered
            comment = dict(CUSTOMERS)[score]
            assert int(deal[deal_survey.score_field]) == score
            assert deal[deal_survey.comment_field] == comment
            assert deal["STAGE_SEMANTIC_ID"] == ("F" if score <= 6 else "S"), score
            assert bool(nps["tasks"]) == (score <= 6), "a detractor's task, nobody else's"

    # The register: sent, opened, answered, each in order.
    states = {row["state"] for row in rows}
    assert {"sent", "opened", "answered"} <= states, states
    scores = sorted(score for _, score in shown["answered"].values())
    assert scores == sorted(score for score, _ in CUSTOMERS)
    for request_id in shown["answered"]:
        row = by_id[request_id]
        assert row["state"] == "answered"
        assert row["sent_at"] <= row["opened_at"] <= row["answered_at"]
    for request_id in shown["opened"]:
        assert by_id[request_id]["state"] == "opened"
        assert by_id[request_id]["answered_at"] is None
    conn = await asyncpg.connect(stack.database_url)
    try:
        register = {
            row["state"]: row["n"]
            for row in await conn.fetch(
                "SELECT state, count(*) AS n FROM dispatch_requests GROUP BY state"
            )
        }
    finally:
        await conn.close()
    assert shown["register"] == register
    assert await dlq_total(stack.rabbitmq_url) == 0

    assert any(line.startswith(f"sales in the register {SALES}/{SALES}") for line in lines)
    assert "The register for these sales (nps survey list):" in lines
    assert "Where to look:" in lines
    personal = {link for m in inbox for link in m["links"]} | {
        address for m in inbox for address in m["envelope_to"]
    }
    assert personal
    assert not [line for line in lines if any(secret in line for secret in personal)], (
        "the demo prints no personal link or address"
    )

    # The follow-up: the leads and tasks of the answers followed; those the demo closed or took
    # in work in the sandbox are seen through the update events, long before a scheduled read.
    followed = summary["followup"]
    assert followed["moved"] > 0
    assert followed["closed"] > 0
    assert followed["seconds"] < 60, "seen through the events, not the 15-minute read"
    assert any(line.startswith("Follow-up (did anyone act?)") for line in lines)
    assert any(line.startswith("The dashboard") for line in lines)
    assert summary["unnamed"] == [], "the managers' names are known before the demo ends"
    await _dashboard_shows_the_demo(stack, portal_config, shown, followed)


async def _dashboard_shows_the_demo(
    stack: Stack, config: PortalConfig, shown: dict[str, Any], followed: dict[str, Any]
) -> None:
    """What a new user sees after the demo: every page shows its data."""
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=30) as http:
        portal = (await http.get("/sandbox/info")).raise_for_status().json()["member_id"]
    async with dashboard(stack, config) as http:
        ratings = await _page(http, "/ratings", portal=portal)
        ratings_csv = await http.get("/ratings.csv", params={"portal": portal}, headers=BEARER)
        asked = figures(await _page(http, "/asked", portal=portal))
        followup_html = await _page(http, "/followup", portal=portal)
        followup_csv = await http.get("/followup.csv", params={"portal": portal}, headers=BEARER)
        managers = await _page(http, "/managers", portal=portal)
        trend = await _page(http, "/", portal=portal)
    # All ratings: the customers' comments from the survey page, and the CSV of them
    for _, comment in CUSTOMERS:
        assert comment in ratings
    assert ratings_csv.status_code == 200
    rated = list(csv.DictReader(io.StringIO(ratings_csv.content.decode("utf-8-sig"))))
    assert {comment for _, comment in CUSTOMERS} <= {row["comment"] for row in rated}
    # Asked: the ones only opened are awaiting their answer
    assert int(asked["awaiting-total"]["total"]) >= len(shown["opened"])
    for request_id in shown["opened"]:
        assert request_id in asked
    assert "unanswered-total" in asked
    # Follow-up: the loop as the demo left it, and its CSV
    loop = figures(followup_html)["loop"]
    assert int(loop["followed"]) >= followed["followed"]
    assert int(loop["closed"]) >= followed["closed"]
    assert loop["closed_pct"] != "—"
    assert loop["to_close"] != "—"
    assert followup_csv.status_code == 200
    header = next(csv.reader(io.StringIO(followup_csv.content.decode("utf-8-sig"))))
    assert tuple(header) == FOLLOWUP_CSV_HEADER
    # Managers by name, never "user <id>" where the portal knows them
    manager_ids = [key for key in figures(managers) if key.isdigit()]
    assert manager_ids
    for manager in manager_ids:
        assert f">user {manager}</a>" not in managers, manager
    # A view over a handful of answers says its number is unreliable
    assert "unreliable:" in trend
