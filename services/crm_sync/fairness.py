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
  messages keep their order of arrival behind those already parked. The held queue is drained
  by a consumer of its own (a prefetch of its own: only that portal's work waits there, in that
  portal's budget). The pair opens again once the held queue is empty: no message ready in it
  and none of its messages in the drain's hands.

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


def on_arrival(pair: Pair, wait_s: float | None) -> tuple[Decision, Pair]:
    """A message of the pair arrived on the shared queue; `wait_s` is how long the portal's
    budget would make a request in the message's lane wait (None: unknown, not asked). A held
    pair parks it; an open one parks it, and turns held, when the budget would make it wait."""
    if pair.held:
        return HOLD, pair
    if wait_s is not None and wait_s > 0:
        return HOLD, replace(pair, held=True)
    return HANDLE, pair


def needs_budget(pair: Pair) -> bool:
    """Whether the decision needs the portal's budget asked: a held pair parks without asking."""
    return not pair.held


def drain_started(pair: Pair) -> Pair:
    """The drain took one message of the held queue."""
    return replace(pair, draining=pair.draining + 1)


def drain_done(pair: Pair) -> tuple[Pair, bool]:
    """The drain finished one message (written, retried or dead-lettered: gone from the held
    queue either way); whether the held queue's size should be asked now, to open the pair: only
    when the drain holds none of its messages any more."""
    left = replace(pair, draining=max(0, pair.draining - 1))
    return left, left.held and left.draining == 0


def on_size(pair: Pair, ready: int) -> tuple[Pair, bool]:
    """The held queue holds `ready` messages not yet delivered: an empty queue with none in the
    drain's hands opens the pair. Returns the pair and whether it opened now."""
    if pair.held and ready == 0 and pair.draining == 0:
        return replace(pair, held=False), True
    return pair, False


def recovered(ready: int) -> Pair:
    """A pair whose held queue an earlier run left with `ready` messages, at start: held until
    they are drained (the portal's new messages wait behind them), open when it is empty."""
    return Pair(held=ready > 0)


def held_queue(queue: str, portal: str) -> str:
    """The held queue of `portal`'s messages of `queue`."""
    return f"{queue}.portal.{portal}"
