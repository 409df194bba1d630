"""Rate budget arithmetic and the operating-time tracker, on an injected clock."""

from typing import Any

import pytest

from shared.bitrix24.budget import MemoryRateBudget, default_headroom, drain, wait_for
from shared.bitrix24.operating import OperatingTracker
from shared.portal_config import Rate
from tests.support import T0, FakeClock


def budget(
    clock: FakeClock, per_second: float = 2.0, burst: int = 50, **options: Any
) -> MemoryRateBudget:
    rate = Rate(per_second=per_second, burst=burst)
    return MemoryRateBudget(rate, clock=clock, sleep=clock.sleep, **options)


# --- pure arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "elapsed_s", "slow_s", "expected"),
    [
        pytest.param(10, 2, 0, 6, id="elapsed-time-times-the-rate"),
        pytest.param(3, 10, 0, 0, id="stops-at-zero"),
        # 4 s at half rate (1/s) until the slow period ends, then 2 s at full rate (2/s).
        pytest.param(20, 6, 4, 12, id="slower-during-the-slow-period"),
        pytest.param(5, -3, 0, 5, id="a-clock-that-went-backwards-drains-nothing"),
        # A 20 s stall: the portal drained the requests it received as much as the copy did.
        pytest.param(45, 20, 0, 5, id="a-stall-drains-what-the-portal-drained"),
        pytest.param(50, 20, 30, 30, id="a-stall-after-a-503-drains-at-half-rate"),
    ],
)
def test_drain(level: float, elapsed_s: float, slow_s: float, expected: float) -> None:
    slow_until = T0 + slow_s if slow_s else 0
    drained = drain(level, T0, T0 + elapsed_s, slow_until=slow_until, per_second=2, slow_factor=0.5)
    assert drained == expected


@pytest.mark.parametrize(
    ("excess", "slow_s", "expected"),
    [
        pytest.param(0, 0, 0.0, id="nothing-to-drain"),
        pytest.param(1, 0, 0.5, id="one-request-at-2-per-s"),
        pytest.param(1, 10, 1.0, id="one-request-at-half-rate"),
        # 2 s of slow drain (1/s) clears 2, the remaining 2 at 2/s take 1 s more.
        pytest.param(4, 2, 3.0, id="the-slow-period-then-the-normal-rate"),
        # A full copy (50 against a capacity of 45) after a 503: 6 more at 1/s.
        pytest.param(6, 30, 6.0, id="a-full-copy-after-a-503"),
    ],
)
def test_wait_for(excess: float, slow_s: float, expected: float) -> None:
    slow_until = T0 + slow_s if slow_s else 0
    assert wait_for(excess, T0, slow_until=slow_until, per_second=2, slow_factor=0.5) == expected


def test_headroom_is_a_tenth_of_the_burst_and_at_least_two() -> None:
    assert default_headroom(50) == 5
    assert default_headroom(250) == 25
    assert default_headroom(10) == 2


# --- MemoryRateBudget ---------------------------------------------------------------------------


async def test_the_burst_goes_at_once_then_requests_follow_the_rate() -> None:
    clock = FakeClock()
    rate_budget = budget(clock)
    assert rate_budget.capacity == 45
    for _ in range(45):
        assert await rate_budget.acquire() == 0.0
    assert clock.now == T0
    for _ in range(20):
        await rate_budget.acquire()
    assert clock.now == pytest.approx(T0 + 10.0)  # 20 more requests at 2/s


async def test_an_idle_bucket_refills_its_burst() -> None:
    clock = FakeClock()
    rate_budget = budget(clock, per_second=10, burst=10, headroom=0)
    for _ in range(10):
        await rate_budget.acquire()
    clock.now += 1.0
    for _ in range(10):
        assert await rate_budget.acquire() == 0.0
    assert await rate_budget.acquire() == pytest.approx(0.1)


async def test_a_steady_writer_gets_the_full_rate_and_never_more() -> None:
    """At 2 requests/s, 600 requests after the burst take 300 s: 100 commands/s in batches of 50."""
    clock = FakeClock()
    rate_budget = budget(clock)
    for _ in range(45 + 600):
        await rate_budget.acquire()
    assert clock.now - T0 == pytest.approx(300.0)


async def test_after_a_503_the_bucket_is_full_and_drains_at_half_rate() -> None:
    clock = FakeClock()
    rate_budget = budget(clock, per_second=2, burst=50, slow_s=30)
    await rate_budget.penalise()
    # Level 50, capacity 45: 6 must drain before one more fits, at 1/s during the slow period.
    assert await rate_budget.acquire() == pytest.approx(6.0)
    clock.now = T0 + 60  # long after the slow period: normal rate again
    for _ in range(45):
        await rate_budget.acquire()
    assert await rate_budget.acquire() == pytest.approx(0.5)


async def test_room_counts_the_slow_period_after_a_503() -> None:
    clock = FakeClock()
    rate_budget = budget(clock, per_second=2, burst=50, slow_s=30)
    await rate_budget.penalise()
    # As for acquire(): 6 must drain at 1/s during the slow period; nothing is counted.
    assert await rate_budget.room() == pytest.approx(6.0)
    assert await rate_budget.acquire() == pytest.approx(6.0)


async def test_an_unlimited_budget_never_waits() -> None:
    clock = FakeClock()
    rate_budget = MemoryRateBudget(None, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        assert await rate_budget.acquire() == 0.0
    await rate_budget.penalise()
    assert await rate_budget.acquire() == 0.0
    assert await rate_budget.room() == 0.0


async def test_a_parked_method_is_reported_until_its_time() -> None:
    clock = FakeClock()
    rate_budget = budget(clock)
    until = await rate_budget.operation_limit_hit("CRM.Item.List", T0 + 120)
    assert until == T0 + 120
    assert await rate_budget.parked(["crm.item.list", "crm.contact.get"]) == {
        "crm.item.list": T0 + 120
    }
    clock.now = T0 + 120
    assert await rate_budget.parked(["crm.item.list"]) == {}


async def test_a_429_without_a_reset_time_parks_for_one_bucket() -> None:
    clock = FakeClock()
    rate_budget = budget(clock)
    assert await rate_budget.operation_limit_hit("crm.item.add", None) == T0 + 60


async def test_a_method_near_its_operating_limit_is_parked_before_the_portal_blocks_it() -> None:
    clock = FakeClock()
    rate_budget = budget(clock, operating_limit_s=100)
    await rate_budget.observe("crm.item.list", {"processing": 1.0, "operating": 80.0})
    assert await rate_budget.parked(["crm.item.list"]) == {}
    await rate_budget.observe("crm.item.list", {"operating": 91.0, "operating_reset_at": T0 + 300})
    assert await rate_budget.parked(["crm.item.list"]) == {"crm.item.list": T0 + 300}
    assert await rate_budget.parked(["crm.contact.get"]) == {}


# --- OperatingTracker -------------------------------------------------------------------------


def test_batch_processing_times_add_up_per_method() -> None:
    tracker = OperatingTracker(limit_s=480)
    for _ in range(10):
        assert tracker.observe("crm.contact.update", T0, processing=4.0) is None
    assert tracker.estimate("crm.contact.update", T0) == 40.0
    assert tracker.estimate("crm.contact.list", T0) == 0.0


def test_time_leaves_the_window_after_ten_minutes() -> None:
    tracker = OperatingTracker(limit_s=480)
    tracker.observe("m", T0, processing=100.0)
    tracker.observe("m", T0 + 120, processing=50.0)
    assert tracker.estimate("m", T0 + 599) == 150.0
    assert tracker.estimate("m", T0 + 600) == 50.0
    assert tracker.estimate("m", T0 + 720) == 0.0


def test_the_portals_total_corrects_the_estimate_both_ways() -> None:
    tracker = OperatingTracker(limit_s=480)
    tracker.observe("m", T0, processing=30.0)
    tracker.observe("m", T0 + 70, operating=100.0)  # others spent 70 s more
    assert tracker.estimate("m", T0 + 70) == 100.0
    tracker.observe("m", T0 + 80, operating=75.0)  # the oldest bucket is gone on the portal
    assert tracker.estimate("m", T0 + 80) == 75.0
    assert tracker.estimate("m", T0 + 600) == 70.0  # 5 s were left in the bucket now gone


def test_parking_ends_when_enough_time_has_left_the_window() -> None:
    tracker = OperatingTracker(limit_s=100, park_ratio=0.9)
    assert tracker.observe("m", T0, processing=50.0) is None
    assert tracker.observe("m", T0 + 100, processing=30.0) is None
    # 95 >= 90: parked until the first bucket (50 s) leaves at T0+600, leaving 45.
    assert tracker.observe("m", T0 + 200, processing=15.0) == T0 + 600


def test_the_portals_reset_time_wins_when_it_is_known() -> None:
    tracker = OperatingTracker(limit_s=100)
    assert tracker.observe("m", T0, operating=95.0, reset_at=T0 + 42) == T0 + 42
    assert tracker.reset_hint("m", T0) == T0 + 42
    assert tracker.reset_hint("m", T0 + 50) == T0 + 600  # the oldest local bucket
    assert tracker.reset_hint("other", T0) is None


def test_no_limit_means_never_parked() -> None:
    tracker = OperatingTracker(limit_s=None)
    assert tracker.observe("m", T0, processing=10_000.0) is None
