"""Dispatch end to end, every part its own process: sales won in the sandbox portal → the NPS deals
crm_sync creates → the e-mails in the sandbox's local inbox → the links opened and answered on the
survey page → the scores written into the NPS deals and the deals moved → the register shows
sent, opened and answered. Driven by `nps demo`'s dispatch part, checked here on its own against
the portal, the inbox and the register (the unanswered path moves a clock: integration tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from services.harness.chaos import dlq_total
from services.harness.stack import DISPATCH, SURVEY, Stack
from services.ops.demo import run_demo
from services.ops.demo_plan import CUSTOMERS
from shared.portal_config import PortalConfig
from shared.settings import Settings

SALES = 5


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
