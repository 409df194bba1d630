"""crm_sync wiring: `route.*` actions (queues `crm_sync.actions` and, the urgent lane,
`crm_sync.urgent`), the survey page's answers (queue `crm_sync.surveys`) and dispatch's commands
(queue `crm_sync.dispatch`) → Bitrix24 writes → `crm.written.<action>` events through the
outbox."""

from __future__ import annotations

from functools import partial

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.contacts import ContactWriter
from services.crm_sync.creates import EntityWriter
from services.crm_sync.dispatch import DispatchWriter, handle_dispatch
from services.crm_sync.handlers import Writers, handle_action
from services.crm_sync.stages import StageWriter
from services.crm_sync.surveys import SurveyWriter, handle_survey
from shared.bitrix24 import client_from_settings
from shared.events import DispatchCommand, RouteAction, SurveyAnswered
from shared.messaging import subscribe
from shared.service import Runtime, run_loop, serve
from shared.settings import Settings
from shared.topology import (
    CRM_SYNC_ACTIONS,
    CRM_SYNC_DISPATCH,
    CRM_SYNC_SURVEYS,
    CRM_SYNC_URGENT,
)

PREFETCH = 200
"""Unacked messages in flight: enough for three groups of 48 contacts at work (two in the
pipeline, one waiting for its place) and the next one filling up while they wait for the
portal."""
URGENT_PREFETCH = 32
"""Unacked urgent actions in flight, on a channel of their own: a bulk backlog holding all of
`PREFETCH` never keeps an urgent action in RabbitMQ."""


async def wire(runtime: Runtime) -> None:
    client = client_from_settings(runtime.settings, runtime.pool, runtime.config)
    coalescer = CommandCoalescer(client)
    writers = Writers(
        contacts=ContactWriter(runtime.pool, runtime.outbox, coalescer, runtime.config),
        entities=EntityWriter(runtime.pool, runtime.outbox, coalescer, runtime.config),
        stages=StageWriter(runtime.pool, runtime.outbox, coalescer),
    )
    handler = partial(handle_action, writers=writers)
    attempts = runtime.settings.retry_max_attempts
    subscribe(
        runtime.broker,
        CRM_SYNC_URGENT,
        RouteAction,
        handler,
        max_attempts=attempts,
        prefetch=URGENT_PREFETCH,
    )
    subscribe(runtime.broker, CRM_SYNC_ACTIONS, RouteAction, handler, max_attempts=attempts)
    subscribe(
        runtime.broker,
        CRM_SYNC_SURVEYS,
        SurveyAnswered,
        partial(
            handle_survey,
            writer=SurveyWriter(runtime.pool, runtime.outbox, coalescer, runtime.config),
        ),
        max_attempts=attempts,
    )
    # Dispatch's commands are bulk work: their own queue, the bulk lane of the budget.
    subscribe(
        runtime.broker,
        CRM_SYNC_DISPATCH,
        DispatchCommand,
        partial(
            handle_dispatch,
            writer=DispatchWriter(runtime.pool, runtime.outbox, coalescer),
        ),
        max_attempts=attempts,
    )


def run(settings: Settings) -> None:
    """`nps run crm_sync`."""
    run_loop(serve("crm_sync", settings, wire, prefetch=PREFETCH))
