"""crm_sync wiring: `route.*` actions (queues `crm_sync.actions` and, the urgent lane,
`crm_sync.urgent`), the survey page's answers (queue `crm_sync.surveys`) and dispatch's commands
(queue `crm_sync.dispatch`) → Bitrix24 writes → `crm.written.<action>` events through the
outbox."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeVar

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.contacts import ContactWriter
from services.crm_sync.creates import EntityWriter
from services.crm_sync.dispatch import DispatchWriter, handle_dispatch
from services.crm_sync.handlers import Writers, handle_action
from services.crm_sync.held import HeldQueues, PortalOf
from services.crm_sync.locks import LockSession
from services.crm_sync.stages import StageWriter
from services.crm_sync.surveys import SurveyWriter, handle_survey
from shared.bitrix24.lanes import BULK, Lane, lane_of
from shared.events import DispatchCommand, Event, RouteAction, SurveyAnswered
from shared.messaging import Handler, subscribe
from shared.portals import PerPortal
from shared.service import Runtime, run_loop, serve
from shared.settings import Settings
from shared.topology import (
    CRM_SYNC_ACTIONS,
    CRM_SYNC_DISPATCH,
    CRM_SYNC_SURVEYS,
    CRM_SYNC_URGENT,
    QueueSpec,
)

E = TypeVar("E", bound=Event)

PREFETCH = 200
"""Unacked messages in flight: enough for three groups of 48 contacts at work (two in the
pipeline, one waiting for its place) and the next one filling up while they wait for the
portal."""
URGENT_PREFETCH = 32
"""Unacked urgent actions in flight, on a channel of their own: a bulk backlog holding all of
`PREFETCH` never keeps an urgent action in RabbitMQ."""
HELD_PREFETCH = PREFETCH
"""Unacked messages in flight from one portal's held queue of a bulk queue (application mode,
`held.py`), on the held queue's own channel: as many as the shared queues', so a portal held at
its ceiling still fills its requests as it did."""


HELD_LOOKUP_EVERY = 6
"""Held queues nobody here drains are looked for every this many `APP_PORTALS_RELOAD_S` (60 s
by default): a look asks the broker about every served portal's held queues."""


def action_portal(action: RouteAction) -> tuple[str, Lane]:
    return action.answer.portal.key, lane_of(action.urgent)


def survey_portal(event: SurveyAnswered) -> tuple[str, Lane]:
    return event.portal.key, BULK


def command_portal(command: DispatchCommand) -> tuple[str, Lane]:
    return command.portal.key, BULK


@dataclass(frozen=True)
class PortalWriters:
    """One portal's writers, sharing that portal's coalescer (its requests carry only its
    commands) and configuration."""

    actions: Writers
    surveys: SurveyWriter
    dispatch: DispatchWriter


async def wire(runtime: Runtime) -> None:
    pool, outbox, configs = runtime.pool, runtime.outbox, runtime.configs
    clients = runtime.portal_clients()

    locks = LockSession(pool)  # every writer's locks, of every portal, on one connection

    def writers_of(key: str) -> PortalWriters:
        coalescer = CommandCoalescer(clients.get(key))
        config = configs.get(key)
        return PortalWriters(
            actions=Writers(
                contacts=ContactWriter(pool, outbox, coalescer, config, locks=locks),
                entities=EntityWriter(pool, outbox, coalescer, config, locks=locks),
                stages=StageWriter(pool, outbox, coalescer),
            ),
            surveys=SurveyWriter(pool, outbox, coalescer, config, locks=locks),
            dispatch=DispatchWriter(pool, outbox, coalescer, locks=locks),
        )

    portals = PerPortal(configs, writers_of)

    async def writers(key: str) -> PortalWriters:
        await runtime.ensure_portal(key)
        return portals.get(key)

    async def on_action(action: RouteAction) -> None:
        await handle_action(action, (await writers(action.answer.portal.key)).actions)

    async def on_survey(event: SurveyAnswered) -> None:
        await handle_survey(event, (await writers(event.portal.key)).surveys)

    async def on_dispatch(command: DispatchCommand) -> None:
        await handle_dispatch(command, (await writers(command.portal.key)).dispatch)

    attempts = runtime.settings.retry_max_attempts
    # Application mode: a portal at its ceiling has its messages held aside (held.py).
    held = HeldQueues.of(runtime)

    def consume(
        spec: QueueSpec,
        model: type[E],
        handler: Handler[E],
        portal_of: PortalOf[E],
        prefetch: int | None = None,
    ) -> None:
        around = held.around(spec, model, handler, portal_of, prefetch=prefetch or HELD_PREFETCH)
        subscribe(
            runtime.broker,
            spec,
            model,
            handler,
            max_attempts=attempts,
            prefetch=prefetch,
            around=around,
        )

    consume(CRM_SYNC_URGENT, RouteAction, on_action, action_portal, URGENT_PREFETCH)
    consume(CRM_SYNC_ACTIONS, RouteAction, on_action, action_portal)
    consume(CRM_SYNC_SURVEYS, SurveyAnswered, on_survey, survey_portal)
    # Dispatch's commands are bulk work: their own queue, the bulk lane of the budget.
    consume(CRM_SYNC_DISPATCH, DispatchCommand, on_dispatch, command_portal)
    await held.recover()
    if runtime.portals is not None:

        async def look_for_held(stop: asyncio.Event) -> None:
            await held.watch(HELD_LOOKUP_EVERY * runtime.settings.app_portals_reload_s, stop)

        runtime.background.append(look_for_held)


def run(settings: Settings) -> None:
    """`nps run crm_sync`."""
    run_loop(serve("crm_sync", settings, wire, prefetch=PREFETCH))
