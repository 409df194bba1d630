"""The urgent/bulk reservation arithmetic of the rate budget (shared/bitrix24/lanes.py)."""

from __future__ import annotations

import pytest

from shared.bitrix24.lanes import BULK, URGENT, Lane, LanePolicy, LaneState, admit, room

CAPACITY = 45.0
NOW = 1000.0
POLICY = LanePolicy(bulk_min_share=0.2, reserve=2, claim_s=1.0)


def drain_time(excess: float) -> float:
    """Two requests a second, no slow period."""
    return max(0.0, excess) / 2.0


URGENT_WAITS = LaneState(urgent_until=NOW + 0.5)
BULK_WAITS = LaneState(bulk_until=NOW + 0.5)
BULK_OWED = LaneState(urgent_until=NOW + 0.5, bulk_until=NOW + 0.5, bulk_credit=1.0)


@pytest.mark.parametrize(
    ("lane", "level", "state", "taken", "wait"),
    [
        # nobody waits: every lane fits up to the capacity
        (BULK, 44.0, LaneState(), True, 0.0),
        (URGENT, 44.0, LaneState(), True, 0.0),
        (BULK, 45.0, LaneState(), False, 0.5),
        (URGENT, 45.0, LaneState(), False, 0.5),
        # an urgent claim: bulk leaves the reserve free, urgent does not care
        (BULK, 42.0, URGENT_WAITS, True, 0.0),
        (BULK, 43.0, URGENT_WAITS, False, 0.5),
        (URGENT, 44.0, URGENT_WAITS, True, 0.0),
        # held back, bulk asks again when the claim ends at the latest...
        (BULK, 44.0, LaneState(urgent_until=NOW + 0.2), False, 0.2),
        # ...but never before the level itself has room
        (BULK, 46.0, LaneState(urgent_until=NOW + 0.2), False, 1.0),
        # an expired claim holds nothing back
        (BULK, 44.0, LaneState(urgent_until=NOW), True, 0.0),
        # bulk owed a slot while both wait: the next slot is bulk's
        (BULK, 44.0, BULK_OWED, True, 0.0),
        (URGENT, 44.0, BULK_OWED, False, 0.5),
        (URGENT, 43.0, BULK_OWED, True, 0.0),
        # owed, but bulk is not waiting: urgent takes the slot
        (URGENT, 44.0, LaneState(urgent_until=NOW + 0.5, bulk_credit=1.0), True, 0.0),
        # a bulk claim alone changes nothing for anyone
        (URGENT, 44.0, BULK_WAITS, True, 0.0),
        (BULK, 44.0, BULK_WAITS, True, 0.0),
    ],
)
def test_admission(lane: Lane, level: float, state: LaneState, taken: bool, wait: float) -> None:
    answer = admit(
        lane,
        level=level,
        capacity=CAPACITY,
        now=NOW,
        state=state,
        policy=POLICY,
        drain_time=drain_time,
    )
    assert answer.taken == taken
    assert answer.wait == pytest.approx(wait)


@pytest.mark.parametrize(
    ("lane", "level", "before", "after"),
    [
        # an urgent request credits bulk share / (1 - share) of a request, at most one
        (URGENT, 0.0, LaneState(), LaneState(bulk_credit=0.25)),
        (URGENT, 0.0, LaneState(bulk_credit=0.9), LaneState(bulk_credit=1.0)),
        # bulk spends a whole credit only when it goes despite an urgent claim
        (BULK, 44.0, BULK_OWED, LaneState(NOW + 0.5, NOW + 0.5, 0.0)),
        (BULK, 0.0, LaneState(bulk_credit=1.0), LaneState(bulk_credit=1.0)),
        (
            BULK,
            0.0,
            LaneState(urgent_until=NOW + 5, bulk_credit=0.5),
            LaneState(urgent_until=NOW + 5, bulk_credit=0.5),
        ),
        # a waiting lane claims the budget until its next try plus claim_s
        (URGENT, 45.0, LaneState(), LaneState(urgent_until=NOW + 0.5 + 1.0)),
        (BULK, 45.0, LaneState(), LaneState(bulk_until=NOW + 0.5 + 1.0)),
        # a claim is never shortened
        (URGENT, 45.0, LaneState(urgent_until=NOW + 9), LaneState(urgent_until=NOW + 9)),
    ],
)
def test_state_after(lane: Lane, level: float, before: LaneState, after: LaneState) -> None:
    answer = admit(
        lane,
        level=level,
        capacity=CAPACITY,
        now=NOW,
        state=before,
        policy=POLICY,
        drain_time=drain_time,
    )
    assert answer.state == after


@pytest.mark.parametrize(
    ("share", "pattern"),
    [
        (0.2, "UUUUB" * 4),
        (0.25, "UUUB" * 5),
        (0.5, "UB" * 10),
        (0.1, "UUUUUUUUUB" * 2),
    ],
)
def test_continuous_urgent_work_leaves_bulk_its_share(share: float, pattern: str) -> None:
    """Both lanes always waiting, one slot draining at a time: who takes each slot."""
    policy = LanePolicy(bulk_min_share=share, reserve=2, claim_s=1.0)
    state = LaneState()
    taken = ""
    now = NOW
    for _ in pattern:
        # both lanes wait (the level is full), then one slot drains and both ask in turn
        for lane in (BULK, URGENT):
            state = admit(
                lane,
                level=CAPACITY,
                capacity=CAPACITY,
                now=now,
                state=state,
                policy=policy,
                drain_time=drain_time,
            ).state
        now += 0.5
        for lane in (BULK, URGENT):
            if admit(
                lane,
                level=CAPACITY - 1,
                capacity=CAPACITY,
                now=now,
                state=state,
                policy=policy,
                drain_time=drain_time,
            ).taken:
                state = admit(
                    lane,
                    level=CAPACITY - 1,
                    capacity=CAPACITY,
                    now=now,
                    state=state,
                    policy=policy,
                    drain_time=drain_time,
                ).state
                taken += lane[0].upper()
                break
    assert taken == pattern


def test_room_counts_nothing_but_claims() -> None:
    fits = room(
        URGENT,
        level=0.0,
        capacity=CAPACITY,
        now=NOW,
        state=LaneState(),
        policy=POLICY,
        drain_time=drain_time,
    )
    assert (fits.taken, fits.state) == (True, LaneState())
    waits = room(
        URGENT,
        level=CAPACITY,
        capacity=CAPACITY,
        now=NOW,
        state=LaneState(),
        policy=POLICY,
        drain_time=drain_time,
    )
    assert (waits.taken, waits.state) == (False, LaneState(urgent_until=NOW + 1.5))


@pytest.mark.parametrize(
    ("share", "reserve", "message"),
    [
        (0.0, 2, "bulk_min_share must be in (0, 1), got 0.0"),
        (1.0, 2, "bulk_min_share must be in (0, 1), got 1.0"),
        (0.2, -1, "reserve must be at least 0, got -1"),
    ],
)
def test_policy_is_checked(share: float, reserve: int, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LanePolicy(bulk_min_share=share, reserve=reserve)
