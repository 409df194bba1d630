"""Commands of concurrent callers packed into shared batch requests (sandbox portal)."""

from __future__ import annotations

import asyncio

import pytest

from services.crm_sync.coalescer import CommandCoalescer
from services.sandbox.portal import SandboxPortal
from shared.bitrix24 import Command, MemoryRateBudget, NotFound
from shared.bitrix24.lanes import Lane
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


def requests_of(portal: SandboxPortal) -> list[list[str]]:
    """The methods of each batch request's commands, request by request."""
    calls = portal.calls_report()["calls"]
    return [
        [c["method"] for c in calls if c["batch"] == call["seq"]]
        for call in calls
        if call["method"] == "batch"
    ]


async def test_an_urgent_unit_queued_behind_bulk_ones_goes_in_the_next_request() -> None:
    """Three requests' worth of bulk units wait for the budget; an urgent unit queued after them
    goes first, in the very next request, and the bulk units keep their order."""
    portal = new_portal(contacts=60)
    clock = FakeClock()
    budget = MemoryRateBudget(
        Rate(per_second=50, burst=5), headroom=2, clock=clock, sleep=clock.sleep
    )
    for _ in range(3):
        await budget.acquire()  # the bucket is full until the clock moves, then holds three
    coalescer = CommandCoalescer(client_for(portal, budget), window_s=0.01)
    bulk = [
        asyncio.create_task(coalescer.run([get(f"c{i}", 1 + n) for i in range(45)]))
        for n in range(3)
    ]
    await asyncio.sleep(0.05)
    urgent = asyncio.create_task(
        coalescer.run([Command("lead", "crm.lead.add", {"fields": {}})], lane="urgent")
    )
    await asyncio.sleep(0)
    clock.now += 10.0
    await asyncio.gather(urgent, *bulk)

    assert requests_of(portal) == [
        ["crm.lead.add"] + ["crm.contact.get"] * 45,
        ["crm.contact.get"] * 45,
        ["crm.contact.get"] * 45,
    ]
    assert int(bulk[0].result().result("c0")["ID"]) == 1
    assert int(bulk[2].result().result("c0")["ID"]) == 3


async def test_a_request_carrying_an_urgent_unit_asks_the_budget_in_the_urgent_lane() -> None:
    portal = new_portal(contacts=5)
    lanes: list[str] = []

    class Recording(MemoryRateBudget):
        async def acquire(self, lane: Lane = "bulk") -> float:
            lanes.append(lane)
            return await super().acquire(lane)

    coalescer = CommandCoalescer(client_for(portal, Recording(None)), window_s=0.01)
    await coalescer.run([get("a", 1)])
    await asyncio.gather(coalescer.run([get("b", 2)]), coalescer.run([get("c", 3)], lane="urgent"))

    assert lanes == ["bulk", "urgent"]


async def test_bulk_units_keep_their_share_of_requests_under_continuous_urgent_work() -> None:
    """Twenty requests' worth of urgent units and five of bulk ones, all waiting: one request in
    five takes bulk units first (the default bulk_min_share, 0.2), in their order."""
    portal = new_portal(contacts=60)
    coalescer = CommandCoalescer(client_for(portal), window_s=0.01)
    users = [Command(f"user{i}", "user.get", {"ID": 1}) for i in range(50)]
    urgent = [coalescer.run(users, lane="urgent") for _ in range(20)]
    bulk = [coalescer.run([get(f"b{i}", 1 + n) for i in range(45)]) for n in range(5)]
    results = await asyncio.gather(*urgent, *bulk)

    lanes = "".join(
        "B" if methods[0] == "crm.contact.get" else "U" for methods in requests_of(portal)
    )
    assert lanes == "UUUUB" * 5
    assert [int(r.result("b0")["ID"]) for r in results[20:]] == [1, 2, 3, 4, 5]


async def test_an_urgent_unit_does_not_push_a_groups_writes_out_of_a_full_request() -> None:
    """A group's read (1 command) and another group's 49 writes fill a request exactly; an urgent
    command joins the writes and the read goes next, rather than a request of two commands."""
    portal = new_portal(contacts=60)
    clock = FakeClock()
    budget = MemoryRateBudget(
        Rate(per_second=50, burst=4), headroom=2, clock=clock, sleep=clock.sleep
    )
    for _ in range(2):
        await budget.acquire()  # full until the clock moves, then room for two requests
    coalescer = CommandCoalescer(client_for(portal, budget), window_s=0.01)
    read = asyncio.create_task(coalescer.run([get("read", 1)]))
    await asyncio.sleep(0)
    writes = asyncio.create_task(coalescer.run([get(f"w{i}", 2 + i) for i in range(49)]))
    await asyncio.sleep(0.05)
    lead = asyncio.create_task(
        coalescer.run([Command("lead", "crm.lead.add", {"fields": {}})], lane="urgent")
    )
    await asyncio.sleep(0)
    clock.now += 10.0
    await asyncio.gather(read, writes, lead)

    assert requests_of(portal) == [
        ["crm.lead.add"] + ["crm.contact.get"] * 49,
        ["crm.contact.get"],
    ]


async def test_a_second_urgent_command_goes_next_rather_than_push_a_groups_writes_out() -> None:
    """A lead and a task beside a group's 49 writes would be 51 commands: the lead rides with the
    writes, the task goes first in the next request (with the read), not three commands alone."""
    portal = new_portal(contacts=60)
    clock = FakeClock()
    budget = MemoryRateBudget(
        Rate(per_second=50, burst=4), headroom=2, clock=clock, sleep=clock.sleep
    )
    for _ in range(2):
        await budget.acquire()
    coalescer = CommandCoalescer(client_for(portal, budget), window_s=0.01)
    read = asyncio.create_task(coalescer.run([get("read", 1)]))
    await asyncio.sleep(0)
    writes = asyncio.create_task(coalescer.run([get(f"w{i}", 2 + i) for i in range(49)]))
    await asyncio.sleep(0.05)
    urgent = [
        asyncio.create_task(coalescer.run([Command(name, method, {"fields": {}})], lane="urgent"))
        for name, method in (("lead", "crm.lead.add"), ("task", "tasks.task.add"))
    ]
    await asyncio.sleep(0)
    clock.now += 10.0
    await asyncio.gather(read, writes, *urgent)

    assert requests_of(portal) == [
        ["crm.lead.add"] + ["crm.contact.get"] * 49,
        ["tasks.task.add", "crm.contact.get"],
    ]
