"""Dispatch wiring: `sale.closed`, the robot's `robot.called`, the survey page's
`survey.ready`/`opened`/`opted_out`/`answered` and crm_sync's outcomes of its commands → the
register; the timer that sends what is due; the follow-up of the leads and tasks crm_sync
created (their outcomes → `dispatch_followups`, their state read when due, one escalation when
overdue) (docs/dispatch.md)."""

from __future__ import annotations

import asyncio
import contextlib

from services.dispatch.dispatcher import Dispatcher
from services.dispatch.follower import Follower
from services.dispatch.mailer import Mailer
from services.dispatch.settings import DispatchSettings
from shared.events import (
    CrmWritten,
    PortalEntityUpdated,
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
    subscribe(broker, DISPATCH_SALES, SaleClosed, dispatcher.on_sale, max_attempts=attempts)
    subscribe(broker, DISPATCH_LINKS, SurveyReady, dispatcher.on_ready, max_attempts=attempts)
    subscribe(broker, DISPATCH_OPENS, SurveyOpened, dispatcher.on_opened, max_attempts=attempts)
    subscribe(
        broker, DISPATCH_OPTOUTS, SurveyOptedOut, dispatcher.on_opted_out, max_attempts=attempts
    )
    subscribe(
        broker, DISPATCH_ANSWERS, SurveyAnswered, dispatcher.on_answered, max_attempts=attempts
    )
    subscribe(broker, DISPATCH_WRITTEN, CrmWritten, dispatcher.on_written, max_attempts=attempts)
    subscribe(broker, DISPATCH_ROBOTS, RobotCalled, dispatcher.on_robot, max_attempts=attempts)
    follower = Follower(
        runtime.pool,
        runtime.outbox,
        runtime.configs,
        portal=runtime.portal_clients(),
        lease_s=settings.lease_s,
    )
    subscribe(broker, DISPATCH_FOLLOWUP, CrmWritten, follower.on_written, max_attempts=attempts)
    subscribe(
        broker, DISPATCH_UPDATES, PortalEntityUpdated, follower.on_updated, max_attempts=attempts
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
