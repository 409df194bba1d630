"""The portal's rate budget: one leaky bucket per portal and the parked methods
(docs/bitrix24-client.md).

Bitrix24 counts every HTTP request (a `batch` of 50 commands is one) in a leaky bucket that drains
`per_second` and refuses requests with 503 `QUERY_LIMIT_EXCEEDED` once it holds more than `burst`.
The budget keeps a copy of that bucket on our side and lets a request go only when the copy has
room, so the portal's bucket never overflows:

- `acquire()` drains the level by the elapsed time times the rate and adds 1 when the result
  stays at or below `capacity` (`burst` minus a small `headroom` for network jitter); otherwise
  it sleeps exactly until there is room and tries again. The client calls it right before a
  request goes out (once the request holds an in-flight slot), since the portal counts a request
  when it arrives; a request that then fails or times out stays counted, as it does there.
- `room()` tells how long until one more request would fit, counting nothing: a caller that
  packs work into requests waits for it first and fills its request up to the moment it can go.
- Both take a lane, `urgent` or `bulk` (the default): while urgent work waits, bulk requests
  leave the next slots to it, keeping a minimum share (`lanes.py`, docs/crm_sync.md).
- `penalise()` after a 503 anyway: the portal's bucket is evidently full, so the copy is set full
  too and drains at `slow_factor` of the rate for `slow_s` seconds, for every process.
- Methods blocked by the operating-time limit (429) are parked until the portal's reset; methods
  close to it are parked before the portal blocks them (see `operating.py`). Other methods go on.

`PgRateBudget` keeps the bucket and the parks in PostgreSQL, so every process calling the portal
(ingest's reads, every crm_sync replica) shares them; `MemoryRateBudget` is the single-process
version. A `rate` of None means unlimited (an on-premise portal without limits): no bucket, but
parking still applies.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg

from shared.bitrix24.lanes import BULK, Admission, Lane, LanePolicy, LaneState, admit, room
from shared.bitrix24.metrics import BUCKET_LEVEL, BUCKET_WAIT, LANE_REQUESTS, LANE_WAIT, PARKS
from shared.bitrix24.operating import OperatingTracker
from shared.db import Conn
from shared.logging import get_logger
from shared.portal_config import Rate

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

MIN_SLEEP_S = 0.001

UNKNOWN_RESET_S = 60.0
"""How long a method is parked after a 429 when nothing says when the portal lets it go again:
one of the portal's one-minute buckets."""

log = get_logger(__name__)


def default_headroom(burst: int) -> int:
    """Requests kept free below the portal's `burst`: 10 %, at least 2 (jitter between the moment
    a request is counted here and the moment it reaches the portal)."""
    return max(2, math.ceil(burst / 10))


def drain(
    level: float,
    updated_at: float,
    now: float,
    *,
    slow_until: float,
    per_second: float,
    slow_factor: float,
) -> float:
    """The bucket level at `now`: drained at `per_second`, at `slow_factor` of it until
    `slow_until`. A clock that went backwards drains nothing."""
    elapsed = max(0.0, now - updated_at)
    slow = max(0.0, min(now, slow_until) - updated_at)
    return max(0.0, level - elapsed * per_second + slow * per_second * (1.0 - slow_factor))


def wait_for(
    excess: float, now: float, *, slow_until: float, per_second: float, slow_factor: float
) -> float:
    """Seconds until `excess` more has drained, given the slow period."""
    if excess <= 0:
        return 0.0
    if now < slow_until:
        slow_rate = per_second * slow_factor
        slow_capacity = (slow_until - now) * slow_rate
        if excess <= slow_capacity:
            return excess / slow_rate
        return (slow_until - now) + (excess - slow_capacity) / per_second
    return excess / per_second


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


class RateBudget(ABC):
    """What the client needs from a rate budget; see the module docstring."""

    def __init__(
        self,
        portal: str,
        rate: Rate | None,
        *,
        headroom: int | None = None,
        operating_limit_s: float | None = 480.0,
        slow_s: float = 30.0,
        slow_factor: float = 0.5,
        lanes: LanePolicy | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < slow_factor <= 1:
            raise ValueError("slow_factor must be in (0, 1]")
        self.portal = portal
        self.rate = rate
        self.capacity = 0.0
        if rate is not None:
            spare = default_headroom(rate.burst) if headroom is None else headroom
            self.capacity = float(max(1, rate.burst - spare))
        self.operating = OperatingTracker(operating_limit_s)
        self.slow_s = slow_s
        self.slow_factor = slow_factor
        self.lanes = lanes or LanePolicy()
        self._clock = clock
        self._sleep = sleep

    async def acquire(self, lane: Lane = BULK) -> float:
        """Wait until one more `lane` request fits in the portal's bucket and count it; returns
        the seconds waited."""
        if self.rate is None:
            return 0.0
        waited = 0.0
        while True:
            level, wait = await self._take(self.rate, lane, waited)
            if wait <= 0:
                break
            wait = max(wait, MIN_SLEEP_S)
            await self._sleep(wait)
            waited += wait
        BUCKET_WAIT.labels(portal=self.portal).observe(waited)
        BUCKET_LEVEL.labels(portal=self.portal).set(level)
        LANE_REQUESTS.labels(portal=self.portal, lane=lane).inc()
        LANE_WAIT.labels(portal=self.portal, lane=lane).observe(waited)
        return waited

    async def room(self, lane: Lane = BULK) -> float:
        """Seconds until one more `lane` request would fit in the portal's bucket (0.0: it fits
        now). Counts nothing (a request that would have to wait claims its lane, though):
        `acquire()` still has to be called, and may wait if another process took the room
        meanwhile."""
        if self.rate is None:
            return 0.0
        return await self._room(self.rate, lane)

    async def penalise(self) -> None:
        """The portal answered 503 `QUERY_LIMIT_EXCEEDED` anyway: fill the bucket and slow it
        down for everyone sharing it."""
        if self.rate is None:
            return
        await self._penalise(self.rate)
        BUCKET_LEVEL.labels(portal=self.portal).set(self.rate.burst)
        log.warning("bitrix24_bucket_slowed", slow_s=self.slow_s, slow_factor=self.slow_factor)

    async def parked(self, methods: Iterable[str]) -> dict[str, float]:
        """The methods among `methods` (lower-cased) that are parked, with when they are free."""
        names = sorted({method.lower() for method in methods})
        return await self._parked(names) if names else {}

    async def observe(self, method: str, time_block: Mapping[str, Any]) -> None:
        """Feed a response's `time` block (or a batch command's `result_time`) to the operating
        tracker; parks the method when it comes close to the portal's limit."""
        name = method.lower()
        until = self.operating.observe(
            name,
            self._clock(),
            processing=_number(time_block.get("processing")),
            operating=_number(time_block.get("operating")),
            reset_at=_number(time_block.get("operating_reset_at")),
        )
        if until is None:
            return
        await self._park(name, until)
        PARKS.labels(method=name, reason="near_limit").inc()
        log.warning(
            "bitrix24_method_parked",
            method=name,
            reason="near_limit",
            until=until,
            used_s=round(self.operating.estimate(name, self._clock()), 3),
        )

    async def operation_limit_hit(self, method: str, reset_at: float | None) -> float:
        """The portal blocked `method` (429): park it until `reset_at`, or the best estimate of
        the reset; returns the time the park ends."""
        name = method.lower()
        now = self._clock()
        until = reset_at if reset_at is not None and reset_at > now else None
        if until is None:
            until = self.operating.reset_hint(name, now) or now + UNKNOWN_RESET_S
        await self._park(name, until)
        PARKS.labels(method=name, reason="limit").inc()
        log.warning("bitrix24_method_parked", method=name, reason="limit", until=until)
        return until

    @abstractmethod
    async def _take(self, rate: Rate, lane: Lane, waited: float) -> tuple[float, float]:
        """Count one `lane` request (that has waited `waited` seconds so far) if it fits:
        (level afterwards, 0.0), else (level, seconds to wait)."""

    def _admit(
        self,
        lane: Lane,
        rate: Rate,
        *,
        level: float,
        now: float,
        slow_until: float,
        state: LaneState,
        count: bool,
    ) -> Admission:
        """`lanes.admit` (or `lanes.room` when not `count`ing) on this bucket."""

        def drain_time(excess: float) -> float:
            return wait_for(
                excess,
                now,
                slow_until=slow_until,
                per_second=rate.per_second,
                slow_factor=self.slow_factor,
            )

        decide = admit if count else room
        return decide(
            lane,
            level=level,
            capacity=self.capacity,
            now=now,
            state=state,
            policy=self.lanes,
            drain_time=drain_time,
        )

    @abstractmethod
    async def _room(self, rate: Rate, lane: Lane) -> float:
        """Seconds until one more `lane` request fits, without counting it."""

    @abstractmethod
    async def _penalise(self, rate: Rate) -> None: ...

    @abstractmethod
    async def _park(self, method: str, until: float) -> None: ...

    @abstractmethod
    async def _parked(self, methods: list[str]) -> dict[str, float]: ...


class MemoryRateBudget(RateBudget):
    """A rate budget for one process (tests, the CLI, single-process tools)."""

    def __init__(
        self,
        rate: Rate | None,
        *,
        portal: str = "local",
        headroom: int | None = None,
        operating_limit_s: float | None = 480.0,
        slow_s: float = 30.0,
        slow_factor: float = 0.5,
        lanes: LanePolicy | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            portal,
            rate,
            headroom=headroom,
            operating_limit_s=operating_limit_s,
            slow_s=slow_s,
            slow_factor=slow_factor,
            lanes=lanes,
            clock=clock,
            sleep=sleep,
        )
        self._level = 0.0
        self._updated_at = clock()
        self._slow_until = 0.0
        self._lanes = LaneState()
        self._parks: dict[str, float] = {}

    def _drained(self, now: float, rate: Rate) -> float:
        return drain(
            self._level,
            self._updated_at,
            now,
            slow_until=self._slow_until,
            per_second=rate.per_second,
            slow_factor=self.slow_factor,
        )

    async def _take(self, rate: Rate, lane: Lane, waited: float) -> tuple[float, float]:
        now = self._clock()
        level = self._drained(now, rate)
        self._updated_at = max(self._updated_at, now)
        answer = self._admit(
            lane,
            rate,
            level=level,
            now=now,
            slow_until=self._slow_until,
            state=self._lanes,
            count=True,
        )
        self._lanes = answer.state
        self._level = level + 1 if answer.taken else level
        return self._level, answer.wait

    async def _room(self, rate: Rate, lane: Lane) -> float:
        now = self._clock()
        level = self._drained(now, rate)
        answer = self._admit(
            lane,
            rate,
            level=level,
            now=now,
            slow_until=self._slow_until,
            state=self._lanes,
            count=False,
        )
        self._lanes = answer.state
        return answer.wait

    async def _penalise(self, rate: Rate) -> None:
        now = self._clock()
        self._level = float(rate.burst)
        self._updated_at = max(self._updated_at, now)
        self._slow_until = max(self._slow_until, now + self.slow_s)

    async def _park(self, method: str, until: float) -> None:
        self._parks[method] = max(until, self._parks.get(method, until))

    async def _parked(self, methods: list[str]) -> dict[str, float]:
        now = self._clock()
        return {m: self._parks[m] for m in methods if self._parks.get(m, now) > now}


# In every statement, $1 is the portal and $2 the time to use: NULL means the database's clock,
# so that processes on different hosts agree. _DRAINED is `drain()` in SQL ($3 the rate, $4 the
# slow factor). _BUCKET locks the row and reads it drained to the time; the lanes' arithmetic is
# `lanes.admit` in Python, inside the same transaction, and _COUNT/_CLAIM write its answer.
_DRAINED = """greatest(0.0, b.level
        - greatest(0.0, n.t - b.updated_at) * $3::float8
        + greatest(0.0, least(n.t, b.slow_until) - b.updated_at) * $3::float8 * (1.0 - $4::float8)
    ) AS drained"""
_BUCKET = f"""
WITH n AS (SELECT coalesce($2::float8, extract(epoch FROM clock_timestamp())) AS t)
SELECT n.t, b.updated_at, b.slow_until, b.urgent_until, b.bulk_until, b.bulk_credit, {_DRAINED}
FROM rate_buckets b, n
WHERE b.portal = $1
FOR UPDATE OF b
"""  # noqa: S608 - a constant fragment, no values
_COUNT = """
UPDATE rate_buckets
SET level = $2, updated_at = greatest(updated_at, $3), bulk_credit = $4
WHERE portal = $1
"""
_CLAIM = """
UPDATE rate_buckets
SET urgent_until = greatest(urgent_until, $2), bulk_until = greatest(bulk_until, $3)
WHERE portal = $1
"""
_USAGE = """
INSERT INTO rate_lane_usage (portal, lane, minute, requests, waited_s)
VALUES ($1, $2, date_trunc('minute', to_timestamp($3::float8)), 1, $4)
ON CONFLICT (portal, lane, minute) DO UPDATE
SET requests = rate_lane_usage.requests + 1, waited_s = rate_lane_usage.waited_s + EXCLUDED.waited_s
RETURNING xmax = 0 AS new_minute
"""
_USAGE_PRUNE = """
DELETE FROM rate_lane_usage
WHERE portal = $1 AND minute < to_timestamp($2::float8) - make_interval(secs => $3::float8)
"""
USAGE_KEPT_S = 86_400.0
"""How long the per-minute lane counts (`rate_lane_usage`) are kept."""
_LANE_USAGE = """
SELECT lane, sum(requests)::bigint AS requests, sum(waited_s) AS waited_s
FROM rate_lane_usage
WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $1::int - 1)
GROUP BY lane
"""
_PENALISE = """
WITH n AS (SELECT coalesce($2::float8, extract(epoch FROM clock_timestamp())) AS t)
UPDATE rate_buckets
SET level = greatest(level, $3::float8),
    updated_at = greatest(updated_at, n.t),
    slow_until = greatest(slow_until, n.t + $4::float8)
FROM n
WHERE portal = $1
"""
_ENSURE = """
INSERT INTO rate_buckets (portal, level, updated_at, slow_until)
VALUES ($1, 0, coalesce($2::float8, extract(epoch FROM clock_timestamp())), 0)
ON CONFLICT (portal) DO NOTHING
"""
_PARK = """
INSERT INTO rate_parks (portal, method, until) VALUES ($1, $2, $3)
ON CONFLICT (portal, method) DO UPDATE SET until = greatest(rate_parks.until, EXCLUDED.until)
"""
_PARKED = """
SELECT method, until FROM rate_parks
WHERE portal = $1
  AND until > coalesce($2::float8, extract(epoch FROM clock_timestamp()))
  AND method = ANY($3::text[])
"""


class PgRateBudget(RateBudget):
    """The portal's budget in PostgreSQL (`rate_buckets`, `rate_parks`), shared by every process
    that uses the same database and `portal` key.

    Each request costs one short transaction: the row lock orders concurrent processes, the level
    is drained, the lanes decide and the request is counted before it commits; a request taken
    also adds to its lane's count of the minute (`rate_lane_usage`, what the Ops page shows).
    `clock=None` (production) uses the database's clock for the bucket and the parks; tests may
    inject one.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        portal: str,
        rate: Rate | None,
        *,
        headroom: int | None = None,
        operating_limit_s: float | None = 480.0,
        slow_s: float = 30.0,
        slow_factor: float = 0.5,
        lanes: LanePolicy | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            portal,
            rate,
            headroom=headroom,
            operating_limit_s=operating_limit_s,
            slow_s=slow_s,
            slow_factor=slow_factor,
            lanes=lanes,
            clock=clock or time.time,
            sleep=sleep,
        )
        self._pool = pool
        self._db_now: Clock | None = clock
        self._row_ready = False
        self._level = 0.0

    def _now(self) -> float | None:
        return None if self._db_now is None else self._db_now()

    async def _ensure_row(self) -> None:
        if not self._row_ready:
            await self._pool.execute(_ENSURE, self.portal, self._now())
            self._row_ready = True

    async def _decide(self, rate: Rate, lane: Lane, waited: float, *, count: bool) -> float:
        """The lanes' answer for one `lane` request, counted when it fits and `count`: the
        seconds to wait (0.0: taken, or there is room). Sets `self._level` for the gauge."""
        await self._ensure_row()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                _BUCKET, self.portal, self._now(), rate.per_second, self.slow_factor
            )
            if row is None:
                raise RuntimeError(f"rate bucket row for portal {self.portal!r} disappeared")
            now: float = row["t"]
            self._level = row["drained"]
            state = LaneState(row["urgent_until"], row["bulk_until"], row["bulk_credit"])
            answer = self._admit(
                lane,
                rate,
                level=self._level,
                now=now,
                slow_until=row["slow_until"],
                state=state,
                count=count,
            )
            if not answer.taken:
                if answer.state != state:
                    await conn.execute(
                        _CLAIM, self.portal, answer.state.urgent_until, answer.state.bulk_until
                    )
                return answer.wait
            if count:
                self._level += 1
                await conn.execute(_COUNT, self.portal, self._level, now, answer.state.bulk_credit)
                new_minute = await conn.fetchval(_USAGE, self.portal, lane, now, waited)
                if new_minute:
                    await conn.execute(_USAGE_PRUNE, self.portal, now, USAGE_KEPT_S)
            return 0.0

    async def _take(self, rate: Rate, lane: Lane, waited: float) -> tuple[float, float]:
        wait = await self._decide(rate, lane, waited, count=True)
        return self._level, wait

    async def _room(self, rate: Rate, lane: Lane) -> float:
        return await self._decide(rate, lane, 0.0, count=False)

    async def _penalise(self, rate: Rate) -> None:
        await self._ensure_row()
        await self._pool.execute(
            _PENALISE, self.portal, self._now(), float(rate.burst), self.slow_s
        )

    async def _park(self, method: str, until: float) -> None:
        await self._pool.execute(_PARK, self.portal, method, until)

    async def _parked(self, methods: list[str]) -> dict[str, float]:
        rows = await self._pool.fetch(_PARKED, self.portal, self._now(), methods)
        return {row["method"]: row["until"] for row in rows}


async def lane_usage(conn: Conn, minutes: int) -> dict[str, tuple[int, float]]:
    """Requests counted per lane over the last `minutes` minutes (this one included), every
    portal together, with the seconds they waited for the budget: {lane: (requests, waited)}."""
    rows = await conn.fetch(_LANE_USAGE, minutes)
    return {row["lane"]: (int(row["requests"]), float(row["waited_s"])) for row in rows}
