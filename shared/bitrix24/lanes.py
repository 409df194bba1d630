"""Urgent and bulk requests in the portal's rate budget: the reservation arithmetic. Pure: no I/O,
no clock (docs/crm_sync.md, Lanes).

Every request goes in one of two lanes. Urgent requests (a detractor's service lead, the head of
sales' task) take the next slots of the portal's bucket; bulk requests (contact patches, reads,
sweeps) fill the rest:

- A lane that has to wait *claims* the budget until a little after the time it was told to wait
  (`urgent_until`, `bulk_until`), so every process sharing the budget knows it is waiting.
- While urgent work is waiting, a bulk request goes only if it leaves `reserve` slots free:
  in a saturated bucket the next slot that drains is urgent's.
- Bulk is slowed, never starved: each urgent request credits bulk with `share / (1 - share)` of
  a request (at most one). While a bulk request waits and holds a whole credit, that next slot is
  bulk's: the urgent request leaves it free and the bulk request takes it despite the urgent
  claim, so bulk gets at least `bulk_min_share` of the requests under continuous urgent work.
- Without an urgent claim bulk takes every slot, as if there were no lanes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

Lane = Literal["urgent", "bulk"]
URGENT: Lane = "urgent"
BULK: Lane = "bulk"
LANES: tuple[Lane, ...] = (URGENT, BULK)


def lane_of(urgent: bool) -> Lane:
    """The lane of a request made for work that is `urgent` or not."""
    return URGENT if urgent else BULK


DEFAULT_BULK_MIN_SHARE = 0.2
DEFAULT_RESERVE = 2
"""Slots a bulk request leaves free while urgent work waits."""
CLAIM_S = 1.0
"""How long a waiting lane's claim lasts beyond the time it was told to wait: a waiter polls
again at that time, and database round trips and sleeps overrun it a little."""
FIT_TOLERANCE = 1e-3
"""Requests a level may exceed the capacity by and still count as fitting (float precision of
Unix times; far inside the headroom)."""
CREDIT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class LaneState:
    """What the lanes share besides the bucket's level (a row in PostgreSQL)."""

    urgent_until: float = 0.0
    bulk_until: float = 0.0
    bulk_credit: float = 0.0


@dataclass(frozen=True)
class LanePolicy:
    bulk_min_share: float = DEFAULT_BULK_MIN_SHARE
    reserve: int = DEFAULT_RESERVE
    claim_s: float = CLAIM_S

    def __post_init__(self) -> None:
        if not 0 < self.bulk_min_share < 1:
            raise ValueError(f"bulk_min_share must be in (0, 1), got {self.bulk_min_share}")
        if self.reserve < 0:
            raise ValueError(f"reserve must be at least 0, got {self.reserve}")

    @property
    def credit_per_urgent(self) -> float:
        """Bulk's credit per urgent request: after `1/credit` urgent requests, one bulk one."""
        return self.bulk_min_share / (1.0 - self.bulk_min_share)


@dataclass(frozen=True)
class Admission:
    """The answer to one request: taken (counted in the bucket) or how long to wait."""

    taken: bool
    wait: float
    state: LaneState


DrainTime = Callable[[float], float]
"""Seconds until the bucket's level has drained by the given number of requests."""


def admit(
    lane: Lane,
    *,
    level: float,
    capacity: float,
    now: float,
    state: LaneState,
    policy: LanePolicy,
    drain_time: DrainTime,
) -> Admission:
    """Whether a `lane` request fits on top of `level` now, and the lanes' state afterwards.

    A request that fits is counted by the caller (level + 1). One that does not gets the seconds
    to wait and its lane's claim is extended to that time plus `claim_s`.
    """
    urgent_waiting = state.urgent_until > now
    bulk_waiting = state.bulk_until > now
    owed = state.bulk_credit >= 1.0 - CREDIT_TOLERANCE
    if lane == URGENT:
        need = 2.0 if owed and bulk_waiting else 1.0
        excess = level + need - capacity
        if excess <= FIT_TOLERANCE:
            credit = min(1.0, state.bulk_credit + policy.credit_per_urgent)
            return Admission(True, 0.0, replace(state, bulk_credit=credit))
        wait = drain_time(excess)
        until = max(state.urgent_until, now + wait + policy.claim_s)
        return Admission(False, wait, replace(state, urgent_until=until))
    plain = level + 1.0 - capacity
    held_back = urgent_waiting and not owed
    excess = plain + policy.reserve if held_back else plain
    if excess <= FIT_TOLERANCE:
        credit = state.bulk_credit - 1.0 if urgent_waiting and owed else state.bulk_credit
        return Admission(True, 0.0, replace(state, bulk_credit=max(0.0, credit)))
    wait = drain_time(excess)
    if held_back:
        # Asked again when the urgent claim ends (or the reserve has drained), never before the
        # level itself leaves room.
        wait = max(drain_time(plain), min(wait, state.urgent_until - now))
    until = max(state.bulk_until, now + wait + policy.claim_s)
    return Admission(False, wait, replace(state, bulk_until=until))


def room(
    lane: Lane,
    *,
    level: float,
    capacity: float,
    now: float,
    state: LaneState,
    policy: LanePolicy,
    drain_time: DrainTime,
) -> Admission:
    """Like `admit`, counting nothing: when the request would fit, the state is unchanged (a
    request that has to wait still claims its lane)."""
    answer = admit(
        lane,
        level=level,
        capacity=capacity,
        now=now,
        state=state,
        policy=policy,
        drain_time=drain_time,
    )
    return answer if not answer.taken else Admission(True, 0.0, state)
