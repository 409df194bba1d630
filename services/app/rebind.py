"""The periodic re-bind (docs/app.md, The bindings): at the application's start and every
`APP_REBIND_S`, each installed portal's event bindings, widgets and robots are checked and what
the portal lost is bound again (`Installer.bind`: `event.get`, `placement.get` and
`bizproc.robot.list` first, so a round on a portal that lost nothing binds nothing). A few
portals at a time (`REBIND_CONCURRENCY`); a portal that cannot be reached, or whose tokens are
gone (revoked, uninstalled meanwhile), is logged with the error's code and skipped, the others
go on. No token reaches a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from services.app.installer import Installer
from shared.bitrix24 import Bitrix24Error
from shared.logging import get_logger

log = get_logger(__name__)

REBIND_CONCURRENCY = 4
"""Portals re-bound at the same time."""


@dataclass
class RebindRound:
    """What one round did: the events bound again per portal, and the portals skipped (the
    error's code)."""

    portals: int = 0
    bound: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


async def rebind_all(installer: Installer, concurrency: int = REBIND_CONCURRENCY) -> RebindRound:
    """One round over every installed portal, at most `concurrency` at a time."""
    members = [p.member_id for p in await installer.book.portals() if p.status == "installed"]
    done = RebindRound(portals=len(members))
    gate = asyncio.Semaphore(concurrency)

    async def one(member_id: str) -> None:
        async with gate:
            try:
                missing = await installer.bind(member_id)
            except Bitrix24Error as exc:
                done.skipped[member_id] = exc.code
                log.warning(
                    "app_rebind_skipped",
                    member_id=member_id,
                    error=type(exc).__name__,
                    code=exc.code,
                    method=exc.method,
                )
                return
        if missing:
            done.bound[member_id] = [binding.event for binding in missing]

    await asyncio.gather(*(one(member_id) for member_id in members))
    log.info(
        "app_rebind_done",
        portals=done.portals,
        rebound=sorted(done.bound),
        skipped=len(done.skipped),
    )
    return done


async def run_rebind(installer: Installer, interval_s: float, stop: asyncio.Event) -> None:
    """A round at once, then one every `interval_s` until `stop` is set (a round under way is
    cancelled then: a slow portal does not hold up the shutdown); a round that fails (the
    database restarting) is logged and the next one comes as planned: it never ends the app."""
    while not stop.is_set():
        round_ = asyncio.create_task(rebind_all(installer), name="app-rebind-round")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({round_, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not round_.done():
            round_.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await round_
            return
        error = round_.exception()
        if error is not None:  # the database restarting (asyncpg's errors vary), say
            log.warning("app_rebind_failed", error=type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
