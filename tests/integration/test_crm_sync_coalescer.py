"""Commands of concurrent callers packed into shared batch requests (sandbox portal)."""

from __future__ import annotations

import asyncio

import pytest

from services.crm_sync.coalescer import CommandCoalescer
from shared.bitrix24 import Command, NotFound
from tests.integration.test_crm_sync_support import client_for, new_portal


def get(name: str, contact_id: int) -> Command:
    return Command(name, "crm.contact.get", {"ID": contact_id})


async def test_units_arriving_together_share_one_request() -> None:
    portal = new_portal(contacts=30)
    coalescer = CommandCoalescer(client_for(portal), window_s=0.05)

    results = await asyncio.gather(
        *(coalescer.run([get("a", n), get("b", n + 10)]) for n in range(1, 11))
    )

    assert coalescer.requests == 1
    assert len(portal.calls_report(method="batch")["calls"]) == 1
    for n, result in enumerate(results, start=1):
        assert int(result.result("a")["ID"]) == n
        assert int(result.result("b")["ID"]) == n + 10


async def test_requests_hold_at_most_fifty_commands_and_units_are_never_split() -> None:
    portal = new_portal(contacts=60)
    coalescer = CommandCoalescer(client_for(portal), window_s=0.05)
    units = [[get(f"c{i}", 1 + (n * 15 + i) % 60) for i in range(15)] for n in range(4)]

    await asyncio.gather(*(coalescer.run(unit) for unit in units))

    calls = portal.calls_report()["calls"]
    batches = [call["seq"] for call in calls if call["method"] == "batch"]
    sizes = [sum(1 for call in calls if call["batch"] == seq) for seq in batches]
    assert sizes == [45, 15]


async def test_each_command_gets_its_own_error() -> None:
    portal = new_portal(contacts=5)
    coalescer = CommandCoalescer(client_for(portal), window_s=0.01)

    result = await coalescer.run([get("there", 1), get("gone", 4040)])

    assert int(result.result("there")["ID"]) == 1
    assert isinstance(result.error("gone"), NotFound)
    with pytest.raises(NotFound):
        result.result("gone")


async def test_a_unit_larger_than_a_request_is_refused() -> None:
    coalescer = CommandCoalescer(client_for(new_portal(contacts=1)))
    with pytest.raises(ValueError, match="at most 50"):
        await coalescer.run([get(f"c{i}", 1) for i in range(51)])
