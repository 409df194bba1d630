"""The router's handler: plan the actions of a scored answer, send each one not sent before.

Each action is sent in its own transaction: its row in `router_actions` is inserted (a row that is
already there means the action went out before: skip it), then the action is published with
`mandatory` and a publisher confirm, then the transaction commits. So:
- a redelivery, a DLQ replay or a later version of the answer with the same outcome sends nothing
  again (same `action_id`, row present);
- a crash between the confirm and the commit sends the action again with the same message id,
  which consumers drop (crm_sync looks `ORIGIN_ID` up);
- an action no queue is bound to is returned by RabbitMQ: its row is rolled back and the scored
  event goes to `router.scored.dlq` naming the routing key. Actions sent before it stay sent, so a
  replay once a consumer is bound sends only what is missing;
- two router replicas racing on the same action: the second insert waits for the first
  transaction and then finds the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aio_pika.exceptions import PublishError
from asyncpg.pool import PoolConnectionProxy
from faststream.rabbit import RabbitBroker

from services.router.rules import plan_actions
from shared.events import NpsScored, RouteAction
from shared.logging import get_logger
from shared.messaging import PermanentError, publish
from shared.portal_config import PortalConfig

log = get_logger(__name__)


@dataclass(frozen=True)
class RouterDeps:
    pool: asyncpg.Pool
    broker: RabbitBroker
    config: PortalConfig


def unroutable_reason(action: RouteAction) -> str:
    return (
        f"no consumer bound to {action.routing_key()} (action {action.action!r} of rule "
        f"{action.rule!r}, action id {action.action_id}): bind a queue to it, then replay this "
        "message from router.scored.dlq"
    )


async def _send_once(
    conn: PoolConnectionProxy, deps: RouterDeps, event: NpsScored, action: RouteAction
) -> bool:
    """Send `action` unless it went out before; True when it was sent now."""
    async with conn.transaction():
        recorded = await conn.fetchval(
            """INSERT INTO router_actions
                   (action_id, answer_id, action, rule, scored_event_id, correlation_id, portal)
               VALUES ($1::uuid, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (action_id) DO NOTHING RETURNING 1""",
            action.action_id,
            action.answer.answer_id,
            action.action,
            action.rule,
            event.event_id,
            event.correlation_id,
            action.answer.portal.key,
        )
        if recorded is None:
            return False
        try:
            await publish(deps.broker, action)
        except PublishError as exc:
            raise PermanentError(unroutable_reason(action)) from exc
    return True


async def route_answer(event: NpsScored, deps: RouterDeps) -> None:
    """Handle one `nps.scored.<kind>.<category>` event."""
    answer = event.answer
    sent: list[str] = []
    already_sent: list[str] = []
    actions = plan_actions(event, deps.config)
    async with deps.pool.acquire() as conn:
        for action in actions:
            if await _send_once(conn, deps, event, action):
                sent.append(action.routing_key())
            else:
                already_sent.append(action.routing_key())
    log.info(
        "answer_routed",
        answer_id=answer.answer_id,
        kind=answer.kind,
        category=answer.category,
        supersedes=event.supersedes,
        sent=sent,
        already_sent=already_sent,
    )
