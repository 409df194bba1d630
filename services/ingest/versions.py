"""Which state of an item ingest publishes, and with which revision (pure, no I/O).

Bitrix24's `updatedTime` keeps seconds, so two states of an item saved within one second (an
answer changed on the survey page, a form edited twice) carry the same `updated_at`. Their order
cannot be told from the states themselves, but a read of the item from the portal returns its
current state: a read that starts after both states were seen returns the later one. So a state
that ties with the last one published (same `updated_at`, other content) goes out with a
revision one higher, and the item is read once more (`reread`); what that read finds, when it
differs from the last state published, goes out with a higher revision still.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal


@dataclass(frozen=True)
class Published:
    """The last state of an item ingest published."""

    updated_at: datetime
    fingerprint: str
    revision: int


@dataclass(frozen=True)
class Step:
    """What to do with a state just read: publish it (`new`, with `revision`) or not (`stale`: a
    later second was published; `duplicate`: this state was published), and whether to read the
    item once more."""

    outcome: Literal["new", "stale", "duplicate"]
    revision: int = 0
    reread: bool = False


def next_step(
    last: Published | None,
    updated_at: datetime,
    fingerprint: str,
    *,
    known: bool,
    reread: bool,
) -> Step:
    """The step for a state (`updated_at`, `fingerprint`) given the `last` state published;
    `known`: this state was published at some point, `reread`: it comes from the read made
    after a tie (a fresh read that started after every state so far was seen)."""
    if last is None or updated_at > last.updated_at:
        return Step("new")
    if updated_at < last.updated_at:
        return Step("stale")
    if fingerprint == last.fingerprint:
        return Step("duplicate")
    if reread:
        # The current state, read after the tie: it comes after every state published.
        return Step("new", revision=last.revision + 1)
    if known:
        # An earlier state of this second, late (listed fields) or back again (changed back):
        # only a fresh read can tell.
        return Step("duplicate", reread=True)
    return Step("new", revision=last.revision + 1, reread=True)
