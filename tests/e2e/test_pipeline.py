"""Survey answers from the portal end in exactly one outcome per action, end to end."""

from __future__ import annotations

import asyncpg

from services.ops.chaos import create_answers, settle
from services.ops.stack import Stack
from shared.portal_config import PortalConfig


async def test_answers_flow_from_portal_to_crm(
    stack: Stack, pg_dsn: str, pool: asyncpg.Pool, portal_config: PortalConfig, amqp_url: str
) -> None:
    await create_answers(stack, 150)
    verdict = await settle(stack, pg_dsn, portal_config, amqp_url, timeout_s=240)
    assert verdict.items == 150, verdict.line()
    assert verdict.ok, (verdict.line(), verdict.details)
    assert verdict.dlq == 0, verdict.line()
    conflicts = await pool.fetchval("SELECT count(*) FROM crm_conflicts")
    assert conflicts > 0, "the demo portal's legacy values must produce conflicts"
