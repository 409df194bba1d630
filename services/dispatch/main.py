"""Dispatch wiring: `sale.closed`, the robot's `robot.called`, the survey page's
`survey.ready`/`opened`/`opted_out`/`answered` and crm_sync's outcomes of its commands → the
register; the timer that sends what is due; the follow-up of the leads and tasks crm_sync
created (their outcomes → `dispatch_followups`, their state read when due, one escalation when
overdue) (docs/dispatch.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.dispatch.dispatcher import Dispatcher
from services.dispatch.follower import Follower
from services.dispatch.mailer import Mailer
from services.dispatch.settings import DispatchSettings
from shared.events import (
    CrmWritten,
    Event,
    PortalEntityUpdated,
    PortalRef,
    RobotCalled,
    SaleClosed,
    SurveyAnswered,
    SurveyOpened,
    SurveyOptedOut,
    SurveyReady,
)
from shared.logging import get_logger
from shared.messaging import subscribe
from shared.service import Runtime, run_loop, serve
from shared.settings import Settings
from shared.topology import (
    DISPATCH_ANSWERS,
    DISPATCH_FOLLOWUP,
    DISPATCH_LINKS,
    DISPATCH_OPENS,
    DISPATCH_OPTOUTS,
    DISPATCH_ROBOTS,
    DISPATCH_SALES,
    DISPATCH_UPDATES,
    DISPATCH_WRITTEN,
)

log = get_logger(__name__)

E = TypeVar("E", bound=Event)


def portal_of(event: Event) -> str | None:
    """The portal a message belongs to: its `portal`, or for crm_sync's outcomes the portal
    its details name (None: the request's portal, which was served when it was asked)."""
    if isinstance(event, CrmWritten):
        portal = event.details.get("portal")
        return None if portal is None else str(portal)
    ref = getattr(event, "portal", None)
    return ref.key if isinstance(ref, PortalRef) else None


def for_portal(
    runtime: Runtime, handler: Callable[[E], Awaitable[None]]
) -> Callable[[E], Awaitable[None]]:
    """`handler` once the message's portal is served (`Runtime.ensure_portal`): in application
    mode a portal installed a second ago is read in first, and an uninstalled one's message is
    dropped (`PortalGoneError`), never dead-lettered."""

    async def handle(event: E) -> None:
        key = portal_of(event)
        if key is not None:
            await runtime.ensure_portal(key)
        await handler(event)

    return handle


def build(runtime: Runtime, settings: DispatchSettings) -> Dispatcher:
    """Dispatch serves every portal of the deployment: each request is handled with its
    portal's configuration, client and e-mail settings (the timer's due requests and
    crm_sync's outcomes by the portal of their request)."""
    return Dispatcher(
        runtime.pool,
        runtime.outbox,
        runtime.configs,
        portal=runtime.portal_clients(),
        mailer=Mailer(settings),
        settings=settings,
    )


async def wire(runtime: Runtime, settings: DispatchSettings | None = None) -> None:
    settings = settings or DispatchSettings()
    dispatcher = build(runtime, settings)
    attempts = runtime.settings.retry_max_attempts
    broker = runtime.broker
    subscribe(
        broker,
        DISPATCH_SALES,
        SaleClosed,
        for_portal(runtime, dispatcher.on_sale),
        max_attempts=attempts,
    )
    subscribe(
        broker,
        DISPATCH_LINKS,
        SurveyReady,
        for_portal(runtime, dispatcher.on_ready),
        max_attempts=attempts,
    )
    subscribe(
        broker,
        DISPATCH_OPENS,
        SurveyOpened,
        for_portal(runtime, dispatcher.on_opened),
        max_attempts=attempts,
    )
    subscribe(
        broker,
        DISPATCH_OPTOUTS,
        SurveyOptedOut,
        for_portal(runtime, dispatcher.on_opted_out),
        max_attempts=attempts,
    )
    subscribe(
        broker,
        DISPATCH_ANSWERS,
        SurveyAnswered,
        for_portal(runtime, dispatcher.on_answered),
        max_attempts=attempts,
    )
    subscribe(
        broker,
        DISPATCH_WRITTEN,
        CrmWritten,
        for_portal(runtime, dispatcher.on_written),
        max_attempts=attempts,
    )
    subscribe(
        broker,
        DISPATCH_ROBOTS,
        RobotCalled,
        for_portal(runtime, dispatcher.on_robot),
        max_attempts=attempts,
    )
    follower = Follower(
        runtime.pool,
        runtime.outbox,
        runtime.configs,
        portal=runtime.portal_clients(),
        lease_s=settings.lease_s,
    )
    subscribe(
        broker,
        DISPATCH_FOLLOWUP,
        CrmWritten,
        for_portal(runtime, follower.on_written),
        max_attempts=attempts,
    )
    subscribe(
        broker,
        DISPATCH_UPDATES,
        PortalEntityUpdated,
        for_portal(runtime, follower.on_updated),
        max_attempts=attempts,
    )

    async def timer(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                # A full round means more is due (a campaign): go on at once.
                while await dispatcher.tick() >= settings.batch and not stop.is_set():
                    pass
            except Exception:  # the next round tries again; nothing is lost in between
                log.exception("dispatch_tick_failed")
            try:
                await follower.tick()
            except Exception:  # the same: due reads and escalations stay due
                log.exception("followup_tick_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.tick_s)

    runtime.background.append(timer)


def run(settings: Settings) -> None:
    """`nps run dispatch`."""
    run_loop(serve("dispatch", settings, wire))
