"""The consumer of `crm_sync.actions` and `crm_sync.urgent`: one route action in, its effect on
the portal recorded, the `crm.written.<action>` event queued in the outbox, then the ack (by the
consumer wrapper)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Histogram

from services.crm_sync.contacts import ContactWriter
from services.crm_sync.creates import EntityWriter
from services.crm_sync.entities import CONTACT_ACTION, LEAD_ACTIONS, STAGE_ACTION, TASK_ACTION
from services.crm_sync.stages import StageWriter
from shared.bitrix24.lanes import lane_of
from shared.events import RouteAction
from shared.logging import get_logger
from shared.messaging import PermanentError

log = get_logger(__name__)

ACTION_WAIT = Histogram(
    "nps_crm_sync_action_wait_seconds",
    "From the router's action to its effect on the portal recorded, by lane (urgent, bulk)",
    ["lane"],
    buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)


@dataclass(frozen=True)
class Writers:
    contacts: ContactWriter
    entities: EntityWriter
    stages: StageWriter


async def handle_action(action: RouteAction, writers: Writers) -> None:
    """Carry out `action`; transient errors propagate (retried), permanent ones dead-letter."""
    if action.action == CONTACT_ACTION:
        event = await writers.contacts.patch(action)
    elif action.action in (*LEAD_ACTIONS, TASK_ACTION):
        event = await writers.entities.create(action)
    elif action.action == STAGE_ACTION:
        event = await writers.stages.move(action)
    else:
        raise PermanentError(f"crm_sync does not carry out action {action.action!r}")
    if event is None:
        log.info("crm_action_already_done", action_id=action.action_id, action=action.action)
        return
    waited = (datetime.now(UTC) - action.occurred_at).total_seconds()
    ACTION_WAIT.labels(lane=lane_of(action.urgent)).observe(max(0.0, waited))
    log.info(
        "crm_written",
        action_id=action.action_id,
        action=action.action,
        outcome=event.outcome,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        lane=lane_of(action.urgent),
    )
