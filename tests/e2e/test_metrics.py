"""Each service's real /metrics, scraped from the running pipeline after answers went through:
promtool accepts it, and the alerts and the dashboard read metrics these outputs hold."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.harness.chaos import create_answers, settle
from services.harness.stack import PIPELINE, Stack
from shared.portal_config import PortalConfig
from tests.support.monitoring import (
    SCRAPED,
    alert_rules,
    dashboard_queries,
    metric_names,
    promtool,
    series_names,
)


async def test_every_service_serves_metrics_promtool_accepts(
    stack: Stack, portal_config: PortalConfig
) -> None:
    await create_answers(stack, 20)
    verdict = await settle(stack, portal_config, timeout_s=180)
    assert verdict.ok, (verdict.line(), verdict.details)
    exposed: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as http:
        for name in PIPELINE:
            reply = await http.get(stack.ready_url(name).replace("/readyz", "/metrics"))
            assert reply.status_code == 200, name
            checked = promtool("check", "metrics", stdin=reply.text)
            assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
            for family in text_string_to_metric_families(reply.text):
                exposed |= series_names(family)
    read = set().union(
        *(metric_names(str(rule["expr"])) for rule in alert_rules()),
        *(metric_names(query) for query in dashboard_queries()),
    )
    assert read - exposed - SCRAPED == set()
