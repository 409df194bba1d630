"""Dispatch under faults: the whole stack with the survey page and dispatch (each its own
process), sales closed in the portal and a campaign run (`nps survey campaign --csv`) while
services are killed; then the verdict: every closed sale asked once, every scheduled request
sent, one e-mail per send (counted by Message-ID in the sandbox's inbox) and one NPS deal per
deal survey's request. A message sent twice because dispatch died between the SMTP server's
acceptance and its record is the documented exception, counted as `resent` and only across a
fault that can cause it. The large runs are `-m chaos` (`make chaos`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import asyncpg
import httpx
import pytest

from services.harness.chaos import (
    DispatchLoad,
    chaos_config,
    fault_mid_run,
    fault_stack,
    start_dispatch,
    warm_up,
)
from services.harness.scratch import scratch
from services.harness.stack import Stack, running
from services.harness.verdict import DispatchWatch, Verdict, compute
from shared.portal_config import PortalConfig, load_portal_config
from tests.support.paths import EXAMPLE_CONFIG

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"


@pytest.fixture
def config_path(request: pytest.FixtureRequest) -> Path:
    """The example portal YAML with dispatch's send window open all day."""
    return chaos_config(EXAMPLE_CONFIG, ARTIFACTS / request.node.name / "portal.yaml")


@pytest.fixture
def config(config_path: Path) -> PortalConfig:
    return load_portal_config(config_path)


@pytest.fixture
async def stack(
    pg_server: str, amqp_server: str, config_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """The fault stack with the survey page and dispatch started, warmed up."""
    logs = ARTIFACTS / request.node.name
    async with (
        scratch("e2e", pg_server, amqp_server, vhost_required=False) as (dsn, amqp_url),
        running(fault_stack(dsn, amqp_url, config_path, logs)) as up,
    ):
        await start_dispatch(up)
        yield up


def assert_clean(verdict: Verdict, faults: list[str], logs: Path) -> None:
    """Nothing lost or doubled, the documented resend at most once per fault that can cause
    it; the verdict is kept beside the logs (`verdict.json`)."""
    (logs / "verdict.json").write_text(json.dumps(verdict.as_dict(), indent=2), encoding="utf-8")
    assert verdict.ok, (verdict.line(), verdict.details)
    assert verdict.dlq == 0, f"a passing fault must not flood the DLQ: {verdict.line()}"
    assert verdict.requests > 0
    assert verdict.messages > 0
    assert verdict.register.get("sent", 0) > 0, verdict.register
    resends = sum(fault in {"kill:dispatch", "kill:all", "db-restart"} for fault in faults)
    assert verdict.resent <= resends, verdict.details


@pytest.mark.timeout(420)
async def test_killing_dispatch_survey_and_crm_sync_mid_campaign_loses_and_doubles_nothing(
    stack: Stack, config: PortalConfig, request: pytest.FixtureRequest
) -> None:
    await warm_up(stack, config)
    faults = ["kill:dispatch", "kill:survey", "kill:crm_sync"]
    load = DispatchLoad(
        sales=40, campaign=40, workdir=ARTIFACTS / request.node.name, over_s=6.0, rounds=8
    )
    verdict = await fault_mid_run(
        stack, config, faults, answers=40, hold_s=2.0, timeout_s=240, dispatch=load
    )
    assert_clean(verdict, faults, ARTIFACTS / request.node.name)
    assert (ARTIFACTS / request.node.name / "campaign.csv").read_text().count("\n") == 41

    # A second copy of a send that no fault explains is seen as such.
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as http:
        sent = (await http.get("/inbox.json")).json()["messages"][-1]
    again = EmailMessage()
    again["From"], again["To"], again["Subject"] = sent["from"], sent["to"], sent["subject"]
    again["Message-ID"] = sent["message_id"]
    again.set_content("the same send once more")
    await aiosmtplib.send(again, hostname="127.0.0.1", port=stack.ports["smtp"])
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        doubled = await compute(stack.sandbox_url, pool, config, watch=DispatchWatch())
    finally:
        await pool.close()
    assert doubled.duplicated == 1, doubled.details
    (note,) = doubled.details["duplicated"]
    assert "a message again" in note
    assert "the same Message-ID, no fault in between" in note


@pytest.mark.chaos
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    "fault",
    [
        "kill:dispatch",
        "kill:survey",
        "kill:crm_sync",
        "kill:ingest",
        "kill:all",
        "broker-restart",
        "db-restart",
    ],
)
async def test_chaos_sales_and_a_campaign_under_faults(
    stack: Stack, config: PortalConfig, fault: str, request: pytest.FixtureRequest
) -> None:
    await warm_up(stack, config)
    load = DispatchLoad(
        sales=200, campaign=150, workdir=ARTIFACTS / request.node.name, over_s=12.0, rounds=12
    )
    verdict = await fault_mid_run(
        stack,
        config,
        [fault] * 3,
        answers=400,
        hold_s=3.0,
        gap_s=2.0,
        timeout_s=900,
        dispatch=load,
    )
    assert_clean(verdict, [fault] * 3, ARTIFACTS / request.node.name)
