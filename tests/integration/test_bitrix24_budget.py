"""The rate budget's contract, run against both back-ends (memory, PostgreSQL), plus what only
the PostgreSQL one promises: one bucket and one set of parks for every process of a portal."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from shared.bitrix24 import MemoryRateBudget, PgRateBudget, RateBudget, client_from_settings
from shared.bitrix24.lanes import LanePolicy
from shared.db import create_pool
from shared.portal_config import PortalConfig, Rate
from shared.settings import Settings
from tests.support import T0, FakeClock

Factory = Callable[..., RateBudget]


@pytest.fixture
async def second_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """Another process's connections to the same database."""
    other = await create_pool(pg_dsn, max_size=4)
    yield other
    await other.close()


@pytest.fixture(params=["memory", "postgres"])
def make_budget(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> Factory:
    portal = f"contract-{uuid.uuid4().hex}"

    def make(clock: FakeClock, rate: Rate | None, **options: Any) -> RateBudget:
        if request.param == "memory":
            return MemoryRateBudget(rate, clock=clock, sleep=clock.sleep, **options)
        return PgRateBudget(pool, portal, rate, clock=clock, sleep=clock.sleep, **options)

    return make


async def test_the_burst_goes_at_once_then_the_rate_holds(make_budget: Factory) -> None:
    clock = FakeClock()
    budget = make_budget(clock, Rate(per_second=2, burst=50))
    for _ in range(45):
        assert await budget.acquire() == 0.0
    for _ in range(20):
        await budget.acquire()
    assert clock.now == pytest.approx(T0 + 10.0)


async def test_time_drains_the_bucket(make_budget: Factory) -> None:
    clock = FakeClock()
    budget = make_budget(clock, Rate(per_second=10, burst=10), headroom=0)
    for _ in range(10):
        await budget.acquire()
    clock.now += 0.5
    for _ in range(5):
        assert await budget.acquire() == 0.0
    assert await budget.acquire() == pytest.approx(0.1)


async def test_room_tells_the_wait_for_one_more_request_and_counts_nothing(
    make_budget: Factory,
) -> None:
    clock = FakeClock()
    budget = make_budget(clock, Rate(per_second=2, burst=50))
    assert await budget.room() == 0.0
    for _ in range(45):
        await budget.acquire()
    assert await budget.room() == pytest.approx(0.5)
    assert await budget.room() == pytest.approx(0.5)  # asking again took nothing
    clock.now += 0.5
    assert await budget.room() == 0.0
    assert await budget.acquire() == 0.0  # the room it reported is there to take
    assert await budget.room() == pytest.approx(0.5)


async def test_a_503_fills_the_bucket_and_slows_it(make_budget: Factory) -> None:
    clock = FakeClock()
    budget = make_budget(clock, Rate(per_second=2, burst=50), slow_s=30, slow_factor=0.5)
    await budget.acquire()
    await budget.penalise()
    assert await budget.acquire() == pytest.approx(6.0)  # 6 to drain at 1/s
    assert await budget.acquire() == pytest.approx(1.0)  # still slow
    clock.now = T0 + 100
    assert await budget.acquire() == 0.0


async def test_parks_hold_until_their_time(make_budget: Factory) -> None:
    clock = FakeClock()
    budget = make_budget(clock, None)
    assert await budget.operation_limit_hit("crm.item.list", T0 + 50) == T0 + 50
    assert await budget.operation_limit_hit("crm.item.list", T0 + 20) == T0 + 20
    assert await budget.parked(["CRM.ITEM.LIST", "crm.item.get"]) == {"crm.item.list": T0 + 50}
    clock.now = T0 + 50
    assert await budget.parked(["crm.item.list"]) == {}


async def test_two_processes_share_one_bucket(
    pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    clock = FakeClock()
    portal = f"shared-{uuid.uuid4().hex}"
    rate = Rate(per_second=2, burst=50)
    first = PgRateBudget(pool, portal, rate, clock=clock, sleep=clock.sleep)
    second = PgRateBudget(second_pool, portal, rate, clock=clock, sleep=clock.sleep)
    for _ in range(30):
        assert await first.acquire() == 0.0
    for _ in range(15):
        assert await second.acquire() == 0.0
    assert await second.acquire() == pytest.approx(0.5)
    await first.penalise()
    assert clock.now == T0 + 0.5
    assert await second.acquire() == pytest.approx(6.0)  # the other process's 503 slows us


async def test_two_processes_share_parks(pool: asyncpg.Pool, second_pool: asyncpg.Pool) -> None:
    portal = f"parks-{uuid.uuid4().hex}"
    first = PgRateBudget(pool, portal, None)
    second = PgRateBudget(second_pool, portal, None)
    now = await pool.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    await first.operation_limit_hit("crm.contact.update", now + 300)
    assert await second.parked(["crm.contact.update", "crm.contact.list"]) == {
        "crm.contact.update": pytest.approx(now + 300)
    }


class WouldWaitError(Exception):
    pass


async def refuse_to_wait(seconds: float) -> None:
    raise WouldWaitError


async def test_concurrent_requests_from_two_processes_are_each_counted_once(
    pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    """40 requests at the same instant from two processes: exactly the capacity goes through,
    and the row holds exactly that level (a lost update would let more through)."""
    clock = FakeClock()
    portal = f"race-{uuid.uuid4().hex}"
    rate = Rate(per_second=2, burst=20)
    budgets = [
        PgRateBudget(p, portal, rate, headroom=0, clock=clock, sleep=refuse_to_wait)
        for p in (pool, second_pool)
    ]
    outcomes = await asyncio.gather(
        *(budgets[i % 2].acquire() for i in range(40)), return_exceptions=True
    )
    assert outcomes.count(0.0) == 20
    assert all(isinstance(o, WouldWaitError) for o in outcomes if o != 0.0)
    level = await pool.fetchval("SELECT level FROM rate_buckets WHERE portal = $1", portal)
    assert level == 20.0


async def test_service_clients_use_the_shared_budget_of_their_portal(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    webhook = "https://Portal.Example.com/rest/3/abc123def/"
    configured = Settings(bitrix24_webhook_url=webhook, _env_file=None)
    sandbox = Settings(bitrix24_webhook_url=None, sandbox_port=8123, _env_file=None)
    async with (
        client_from_settings(configured, pool, portal_config) as real,
        client_from_settings(sandbox, pool, portal_config) as local,
    ):
        assert repr(real) == "Bitrix24Client(portal='portal.example.com')"
        assert "abc123def" not in repr(real)
        assert isinstance(real.budget, PgRateBudget)
        assert real.budget.portal == "portal.example.com"
        assert real.budget.rate == Rate(per_second=2, burst=50)
        assert real.budget.capacity == 45
        assert real.budget.operating.limit_s == 480
        assert local.budget.portal == "127.0.0.1:8123"


async def test_an_urgent_request_waiting_in_one_process_holds_back_bulk_in_another(
    pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    clock = FakeClock()
    portal = f"lanes-{uuid.uuid4().hex}"
    rate = Rate(per_second=2, burst=50)
    urgent = PgRateBudget(pool, portal, rate, clock=clock, sleep=refuse_to_wait)
    bulk = PgRateBudget(second_pool, portal, rate, clock=clock, sleep=refuse_to_wait)
    for _ in range(45):
        await bulk.acquire("bulk")
    assert await urgent.room("urgent") == pytest.approx(0.5)  # waits, and says so
    clock.now += 0.5
    with pytest.raises(WouldWaitError):
        await bulk.acquire("bulk")  # the slot that drained is urgent's
    assert await urgent.acquire("urgent") == 0.0


async def test_bulk_keeps_its_minimum_share_under_continuous_urgent_work(
    pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    """Both lanes always waiting in two processes, slot after slot: bulk gets one in five."""
    clock = FakeClock()
    portal = f"share-{uuid.uuid4().hex}"
    rate = Rate(per_second=2, burst=50)
    lanes = LanePolicy(bulk_min_share=0.2)
    urgent = PgRateBudget(pool, portal, rate, lanes=lanes, clock=clock, sleep=refuse_to_wait)
    bulk = PgRateBudget(second_pool, portal, rate, lanes=lanes, clock=clock, sleep=refuse_to_wait)
    for _ in range(45):
        await bulk.acquire("bulk")
    order = ""
    for _ in range(20):
        assert await bulk.room("bulk") > 0
        assert await urgent.room("urgent") > 0
        clock.now += 0.5
        for name, budget in (("B", bulk), ("U", urgent)):
            with contextlib.suppress(WouldWaitError):
                await budget.acquire("urgent" if name == "U" else "bulk")
                order += name
                break
    assert order == "UUUUB" * 4
    usage = await pool.fetch(
        "SELECT lane, sum(requests) AS n FROM rate_lane_usage WHERE portal = $1 GROUP BY lane",
        portal,
    )
    assert {row["lane"]: row["n"] for row in usage} == {"urgent": 16, "bulk": 45 + 4}
