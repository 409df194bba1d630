"""When a portal's message is held aside and when the portal is let through again
(services/crm_sync/fairness.py)."""

from __future__ import annotations

import pytest

from services.crm_sync.fairness import (
    HANDLE,
    HOLD,
    Decision,
    Pair,
    drain_done,
    drain_started,
    held_queue,
    needs_budget,
    on_arrival,
    on_size,
    park_done,
    recovered,
)

OPEN = Pair()
HELD = Pair(held=True)
HELD_DRAINING = Pair(held=True, draining=3)
PARKING = Pair(held=True, parking=1)


@pytest.mark.parametrize(
    ("pair", "wait", "decision", "after"),
    [
        # an open portal with room in its budget: handled where it arrived
        (OPEN, 0.0, HANDLE, OPEN),
        # its budget would make the call wait: held aside (its park in flight), and every next
        # message after it
        (OPEN, 0.5, HOLD, PARKING),
        (OPEN, 0.001, HOLD, PARKING),
        # the budget cannot tell: handled, the handler meets the error as before
        (OPEN, None, HANDLE, OPEN),
        # a held portal keeps its order: held whatever its budget says, one more park in flight
        (HELD, 0.0, HOLD, PARKING),
        (HELD, None, HOLD, PARKING),
        (PARKING, 0.0, HOLD, Pair(held=True, parking=2)),
        (HELD_DRAINING, 0.0, HOLD, Pair(held=True, draining=3, parking=1)),
    ],
)
def test_a_message_is_held_while_its_portal_is_at_its_ceiling_or_already_held(
    pair: Pair, wait: float | None, decision: Decision, after: Pair
) -> None:
    assert on_arrival(pair, wait) == (decision, after)


@pytest.mark.parametrize(("pair", "asks"), [(OPEN, True), (HELD, False), (HELD_DRAINING, False)])
def test_only_an_open_portal_asks_its_budget(pair: Pair, asks: bool) -> None:
    assert needs_budget(pair) is asks


@pytest.mark.parametrize(
    ("pair", "after", "ask_size"),
    [
        # the last message in the drain's hands: time to ask whether the held queue is empty
        (Pair(held=True, draining=1), HELD, True),
        # others still in hand: not yet
        (Pair(held=True, draining=2), Pair(held=True, draining=1), False),
        # an open pair (opened meanwhile) asks nothing
        (Pair(draining=1), OPEN, False),
        # never below zero
        (HELD, HELD, True),
        # a park in flight: the last park asks instead, once it is done
        (Pair(held=True, draining=1, parking=1), Pair(held=True, parking=1, recheck=True), False),
        (Pair(held=True, draining=2, parking=1), Pair(held=True, draining=1, parking=1), False),
    ],
)
def test_the_held_queue_is_asked_once_the_drain_holds_none_of_its_messages(
    pair: Pair, after: Pair, ask_size: bool
) -> None:
    assert drain_done(pair) == (after, ask_size)


def test_the_drain_counts_what_it_holds() -> None:
    assert drain_started(drain_started(HELD)) == Pair(held=True, draining=2)


@pytest.mark.parametrize(
    ("pair", "ready", "after", "opened"),
    [
        # empty and nothing in hand: the portal is let through again
        (HELD, 0, OPEN, True),
        # messages still ready in the held queue: held
        (HELD, 4, HELD, False),
        # a message arrived in the drain's hands meanwhile: held
        (Pair(held=True, draining=1), 0, Pair(held=True, draining=1), False),
        # a message being parked meanwhile: held, or the next ones would overtake it
        (PARKING, 0, PARKING, False),
        (
            Pair(held=True, parking=1, recheck=True),
            0,
            Pair(held=True, parking=1, recheck=True),
            False,
        ),
        # already open
        (OPEN, 0, OPEN, False),
    ],
)
def test_an_empty_held_queue_opens_its_portal(
    pair: Pair, ready: int, after: Pair, opened: bool
) -> None:
    assert on_size(pair, ready) == (after, opened)


@pytest.mark.parametrize(
    ("pair", "parked", "after", "ask_size"),
    [
        # parked while the drain works or will take it: the drain asks once it is done with it
        (PARKING, True, HELD, False),
        (Pair(held=True, draining=1, parking=1), True, Pair(held=True, draining=1), False),
        # the drain emptied its hands while it was in flight: the last park asks
        (Pair(held=True, parking=1, recheck=True), True, HELD, True),
        (
            Pair(held=True, parking=2, recheck=True),
            True,
            Pair(held=True, parking=1, recheck=True),
            False,
        ),
        # a park that failed (the message is retried) asks: nothing of it waits in the held queue
        (PARKING, False, HELD, True),
        (Pair(held=True, parking=2), False, PARKING, False),
        (Pair(held=True, draining=1, parking=1), False, Pair(held=True, draining=1), False),
        # never below zero
        (HELD, True, HELD, False),
    ],
)
def test_the_last_park_in_flight_asks_the_held_queue_when_the_drain_could_not(
    pair: Pair, parked: bool, after: Pair, ask_size: bool
) -> None:
    assert park_done(pair, parked) == (after, ask_size)


@pytest.mark.parametrize(("ready", "after"), [(3, HELD), (1, HELD), (0, OPEN)])
def test_at_start_a_held_queue_left_with_messages_holds_its_portal(ready: int, after: Pair) -> None:
    assert recovered(ready) == after


def test_a_held_queue_is_named_after_its_queue_and_portal() -> None:
    assert held_queue("crm_sync.urgent", "a1b2") == "crm_sync.urgent.portal.a1b2"
