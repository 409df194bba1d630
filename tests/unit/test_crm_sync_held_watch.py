"""The periodic look for held queues (`HeldQueues.watch`): a failed look, whatever the broker
raised, is logged and tried again; it never ends crm_sync (a background job that ends stops the
whole service)."""

from __future__ import annotations

import asyncio

import pytest
from faststream.rabbit import RabbitBroker

from services.crm_sync.held import HeldQueues
from shared.bitrix24 import MemoryRateBudget, RateBudget
from shared.events import RouteAction
from shared.topology import CRM_SYNC_URGENT


async def budget_of(_key: str) -> RateBudget:
    return MemoryRateBudget(None)


async def handler(_event: RouteAction) -> None:
    return None


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("Connection is not ready"),  # aiormq's, on a broker restarting
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ],
)
async def test_a_failed_look_is_tried_again_and_never_ends_the_service(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    held = HeldQueues(
        RabbitBroker(), budget_of, amqp_url="amqp://nowhere/", max_attempts=3, served=tuple
    )
    held.around(CRM_SYNC_URGENT, RouteAction, handler, lambda a: ("p", "urgent"), prefetch=1)
    stop = asyncio.Event()
    looks: list[int] = []

    async def existing(_pairs: object) -> list[tuple[str, str, int]]:
        looks.append(len(looks))
        if len(looks) == 1:
            raise failure
        stop.set()
        return []

    monkeypatch.setattr(held, "_existing", existing)
    await asyncio.wait_for(held.watch(0.01, stop), timeout=5)
    assert looks == [0, 1]
