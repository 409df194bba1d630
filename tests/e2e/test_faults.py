"""Nothing lost, nothing doubled, no legacy value overwritten — with a fault injected while
answers flow: crashed services, a broker restart, a database restart, a portal that fails for a
while, ingest down while the portal emits events. The slow, large runs are `-m chaos`."""

from __future__ import annotations

import asyncio
import signal

import pytest

from services.harness.chaos import create_answers, fault_mid_run, set_faults, settle, warm_up
from services.harness.stack import Stack
from shared.portal_config import PortalConfig

FAULTS = [
    pytest.param("kill:all", 6.0, id="sigkill-every-service"),
    pytest.param("broker-restart", 4.0, id="rabbitmq-restart", marks=pytest.mark.serial),
    pytest.param("db-restart", 0.0, id="postgresql-restart", marks=pytest.mark.serial),
    pytest.param("portal-outage", 15.0, id="portal-503-outage"),
    pytest.param("portal-errors", 4.0, id="portal-500s"),
    pytest.param("ingest-down", 3.0, id="ingest-down-while-portal-emits"),
]


@pytest.mark.timeout(420)
@pytest.mark.parametrize(("fault", "hold_s"), FAULTS)
async def test_a_fault_mid_run_loses_and_doubles_nothing(
    stack: Stack, portal_config: PortalConfig, fault: str, hold_s: float
) -> None:
    await warm_up(stack, portal_config)
    verdict = await fault_mid_run(
        stack, portal_config, [fault], answers=120, hold_s=hold_s, timeout_s=240
    )
    assert verdict.ok, (verdict.line(), verdict.details)
    assert verdict.dlq == 0, f"a passing fault must not flood the DLQ: {verdict.line()}"


@pytest.mark.timeout(420)
async def test_sigterm_finishes_in_flight_work_and_acks_nothing_unfinished(
    stack: Stack, portal_config: PortalConfig
) -> None:
    await warm_up(stack, portal_config)
    await set_faults(stack, {"latency_s": 0.5})
    await create_answers(stack, 60)
    await asyncio.sleep(3.0)
    started = asyncio.get_running_loop().time()
    code = await asyncio.to_thread(stack.stop, "crm_sync")
    took = asyncio.get_running_loop().time() - started
    assert code in (0, -signal.SIGTERM), stack.tail("crm_sync")
    assert took < 30, f"shutdown must be bounded, took {took:.1f} s"
    await set_faults(stack, {})
    await asyncio.to_thread(stack.start, "crm_sync")
    verdict = await settle(stack, portal_config, timeout_s=240)
    assert verdict.ok, (verdict.line(), verdict.details)
    assert verdict.dlq == 0


@pytest.mark.chaos
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("fault", ["kill:crm_sync", "kill:scoring", "broker-restart", "db-restart"])
async def test_chaos_two_thousand_answers(
    stack: Stack, portal_config: PortalConfig, fault: str
) -> None:
    await warm_up(stack, portal_config)
    verdict = await fault_mid_run(
        stack, portal_config, [fault] * 3, answers=2000, hold_s=3.0, gap_s=2.0, timeout_s=900
    )
    assert verdict.ok, (verdict.line(), verdict.details)
