"""Fairness between portals (application mode, docs/crm_sync.md, Many portals): when a portal's
message is set aside in its held queue instead of holding crm_sync's consumer, and when the
portal is let through again. Pure: no I/O, no clock.

crm_sync's queues are shared by every portal, and a message in flight holds one of the
consumer's prefetch slots until its write is done. A portal at its ceiling (its rate budget
would make the call wait) would keep its messages in those slots while the messages of other
portals, urgent ones included, queue behind them. So each (queue, portal) is in one of two
states:

- **open**: its messages are handled where they arrive, as long as the portal's budget has room
  for one more request in the message's lane; a message that would wait for the budget is
  parked in the held queue `<queue>.portal.<member_id>` and the pair turns held.
- **held**: every message of the pair is parked, whatever the budget says, so the portal's
  messages follow those already parked (best effort: each replica has its state of its own, and
  retries reorder messages anyway; correctness never relies on order). The held queue is
  drained by a consumer of its own (a prefetch of its own: only that portal's work waits there,
  in that portal's budget). The pair opens again once the held queue is empty: no message ready
  in it, none of its messages in the drain's hands and none being parked (a message overtaken
  by later ones handled where they arrive).

A budget that cannot tell (its database unreachable) lets the message through: the handler then
meets the same error it meets today and the message is retried as before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Decision = Literal["handle", "hold"]
HANDLE: Decision = "handle"
HOLD: Decision = "hold"


@dataclass(frozen=True)
class Pair:
    """One (queue, portal)'s state in this process."""

    held: bool = False
    draining: int = 0
    """Messages of its held queue the drain is handling now."""
    parking: int = 0
    """Messages being parked now: published into the held queue, not confirmed yet."""
    recheck: bool = False
    """The drain emptied its hands while parks were in flight: the held queue's size is asked
    once they are done."""


def on_arrival(pair: Pair, wait_s: float | None) -> tuple[Decision, Pair]:
    """A message of the pair arrived on the shared queue; `wait_s` is how long the portal's
    budget would make a request in the message's lane wait (None: unknown, not asked). A held
    pair parks it; an open one parks it, and turns held, when the budget would make it wait.
    A message parked counts as in flight until `park_done`."""
    if pair.held or (wait_s is not None and wait_s > 0):
        return HOLD, replace(pair, held=True, parking=pair.parking + 1)
    return HANDLE, pair


def park_done(pair: Pair, parked: bool) -> tuple[Pair, bool]:
    """A park finished (`parked`: confirmed in the held queue; else it failed and the message
    is retried); whether the held queue's size should be asked now, to open the pair: when no
    park is in flight any more, the drain holds none of its messages, and either the park failed
    or the drain emptied its hands meanwhile (otherwise the message just parked is drained
    first, and asks then)."""
    left = replace(pair, parking=max(0, pair.parking - 1))
    if left.held and left.parking == 0 and left.draining == 0 and (left.recheck or not parked):
        return replace(left, recheck=False), True
    return left, False


def needs_budget(pair: Pair) -> bool:
    """Whether the decision needs the portal's budget asked: a held pair parks without asking."""
    return not pair.held


def drain_started(pair: Pair) -> Pair:
    """The drain took one message of the held queue."""
    return replace(pair, draining=pair.draining + 1)


def drain_done(pair: Pair) -> tuple[Pair, bool]:
    """The drain finished one message (written, retried or dead-lettered: gone from the held
    queue either way); whether the held queue's size should be asked now, to open the pair: only
    when the drain holds none of its messages any more and no park is in flight (with parks in
    flight, the last of them asks)."""
    left = replace(pair, draining=max(0, pair.draining - 1))
    if not left.held or left.draining > 0:
        return left, False
    if left.parking > 0:
        return replace(left, recheck=True), False
    return left, True


def on_size(pair: Pair, ready: int) -> tuple[Pair, bool]:
    """The held queue holds `ready` messages not yet delivered: an empty queue with none in the
    drain's hands and no park in flight opens the pair. Returns the pair and whether it opened
    now."""
    if pair.held and ready == 0 and pair.draining == 0 and pair.parking == 0:
        return Pair(), True
    return pair, False


def recovered(ready: int) -> Pair:
    """A pair whose held queue an earlier run left with `ready` messages, at start: held until
    they are drained (the portal's new messages wait behind them), open when it is empty."""
    return Pair(held=ready > 0)


def held_queue(queue: str, portal: str) -> str:
    """The held queue of `portal`'s messages of `queue`."""
    return f"{queue}.portal.{portal}"
