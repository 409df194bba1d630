"""Survey answers from the portal end in exactly one outcome per action, end to end."""

from __future__ import annotations

import asyncpg

from services.harness.chaos import create_answers, settle
from services.harness.stack import Stack
from services.ops.demo import run_demo
from shared.portal_config import PortalConfig
from shared.settings import Settings


async def test_answers_flow_from_portal_to_crm(stack: Stack, portal_config: PortalConfig) -> None:
    conn = await asyncpg.connect(stack.database_url)
    # Another portal's unfinished work in the same database must not hold this verdict up.
    await conn.execute(
        """INSERT INTO crm_actions (action_id, portal, action, answer_id)
           VALUES (gen_random_uuid()::text, 'another-portal', 'contact', 'x')"""
    )
    await create_answers(stack, 150, deals=40)
    verdict = await settle(stack, portal_config, timeout_s=240)
    assert (verdict.items, verdict.deals) == (150, 40), verdict.line()
    assert verdict.ok, (verdict.line(), verdict.details)
    assert verdict.dlq == 0, verdict.line()
    conflicts = await conn.fetchval("SELECT count(*) FROM crm_conflicts")
    await conn.close()
    assert conflicts > 0, "the demo portal's legacy values must produce conflicts"


async def test_demo_follows_its_answers_to_a_report_and_crm_summary(
    stack: Stack,
) -> None:
    settings = Settings(
        database_url=stack.database_url,
        rabbitmq_url=stack.rabbitmq_url,
        sandbox_port=stack.ports["sandbox"],
        _env_file=None,
    )
    lines: list[str] = []
    summary = await run_demo(settings, 40, timeout_s=180, echo=lines.append, deals=30)
    assert (summary["answers"], summary["deals"]) == (40, 30)
    assert sum(row["answers"] for row in summary["report"]) >= 70
    assert any(key.startswith("contact:") for key in summary["crm"])
    assert summary["crm"]["stage:patched"] == 30  # every NPS deal moved once
    assert summary["crm"]["task:created"] > 0
    assert "After the sale" in {row["segment"] for row in summary["segments"]}
    assert lines[0].startswith("created 40 survey answers and 30 answered NPS deals")
    assert any(line.startswith("answers scored 70/70") for line in lines)
    assert any("NPS by product" in line for line in lines)
