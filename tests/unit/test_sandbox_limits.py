"""The leaky bucket and the per-method operating-time window, on their own."""

from services.sandbox.limits import LeakyBucket, OperatingTime


def test_bucket_refuses_the_request_that_would_exceed_the_burst_then_drains() -> None:
    bucket = LeakyBucket()
    assert all(bucket.try_take(100.0, 2.0, 50) for _ in range(50))
    assert not bucket.try_take(100.0, 2.0, 50)
    assert bucket.try_take(100.5, 2.0, 50)  # one drained in half a second
    assert not bucket.try_take(100.5, 2.0, 50)
    assert bucket.level(125.5, 2.0) == 0.0


def test_operating_time_sums_a_sliding_window_of_ten_slots() -> None:
    window = OperatingTime()
    window.add("crm.item.list", 1000.0, 600.0, 100.0)
    window.add("crm.item.list", 1030.0, 600.0, 100.0)  # same one-minute slot
    window.add("crm.item.list", 1100.0, 600.0, 100.0)  # a new slot
    stats = window.stats("crm.item.list", 1100.0, 600.0)
    assert stats.operating == 300.0
    assert stats.reset_at == 1600  # the oldest slot drops out 600 s after it started
    assert window.stats("crm.item.list", 1600.0, 600.0).operating == 100.0
    assert window.stats("crm.item.list", 1700.0, 600.0).operating == 0.0
    assert window.stats("crm.item.add", 1100.0, 600.0).operating == 0.0
