"""Commands of concurrent callers packed into shared batch requests (sandbox portal)."""

from __future__ import annotations

import asyncio

import pytest

from services.crm_sync.coalescer import CommandCoalescer
from shared.bitrix24 import Command, MemoryRateBudget, NotFound
from shared.portal_config import Rate
from tests.support import FakeClock
from tests.support.crm_sync import client_for, new_portal


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


async def test_a_unit_arriving_while_the_budget_is_full_joins_the_request_about_to_go() -> None:
    """The request is filled when the budget lets it go, not when its window ends: a group's
    writes and the next group's read travel together even when the read comes later."""
    portal = new_portal(contacts=5)
    clock = FakeClock()
    budget = MemoryRateBudget(
        Rate(per_second=50, burst=3), headroom=2, clock=clock, sleep=clock.sleep
    )
    await budget.acquire()  # the bucket is full until the clock moves
    coalescer = CommandCoalescer(client_for(portal, budget), window_s=0.01)

    first = asyncio.create_task(coalescer.run([get("a", 1)]))
    await asyncio.sleep(0.1)  # the window has long ended; the budget holds the request back
    second = asyncio.create_task(coalescer.run([get("b", 2)]))
    await asyncio.sleep(0)
    clock.now += 1.0
    one, two = await asyncio.gather(first, second)

    assert int(one.result("a")["ID"]) == 1
    assert int(two.result("b")["ID"]) == 2
    assert coalescer.requests == 1
    assert len(portal.calls_report(method="batch")["calls"]) == 1


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
