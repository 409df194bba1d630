"""The router's handler: plan the actions of a scored answer, send each one not sent before.

The actions of one answer are sent in one transaction: their rows in `router_actions` are inserted
in one statement (a row that is already there means the action went out before: skip it), then
the new ones are published in order with `mandatory` and a publisher confirm, then the
transaction commits. So:
- a redelivery, a DLQ replay or a later version of the answer with the same outcome sends nothing
  again (same `action_id`, row present);
- a crash between a confirm and the commit sends the action again with the same message id,
  which consumers drop (crm_sync looks `ORIGIN_ID` up);
- an action no queue is bound to is returned by RabbitMQ: its row and the rows of the actions
  after it are deleted, the ones sent before it are committed, and the scored event goes to
  `router.scored.dlq` naming the routing key. A replay once a consumer is bound sends only what
  is missing. Any other publish failure (the broker is down) does the same, then the scored event
  is retried;
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


_RECORD = """
INSERT INTO router_actions (action_id, answer_id, action, rule, scored_event_id, correlation_id)
SELECT a.action_id, $2, a.action, a.rule, $3, $4
FROM unnest($1::uuid[], $5::text[], $6::text[]) AS a (action_id, action, rule)
ORDER BY a.action_id
ON CONFLICT (action_id) DO NOTHING RETURNING action_id"""


async def _record(
    conn: PoolConnectionProxy, event: NpsScored, actions: list[RouteAction]
) -> set[str]:
    """Insert the rows of `actions` (in id order, so replicas never deadlock); the ids of the
    ones not recorded before."""
    rows = await conn.fetch(
        _RECORD,
        [a.action_id for a in actions],
        event.answer.answer_id,
        event.event_id,
        event.correlation_id,
        [a.action for a in actions],
        [a.rule for a in actions],
    )
    return {str(row["action_id"]) for row in rows}


async def route_answer(event: NpsScored, deps: RouterDeps) -> None:
    """Handle one `nps.scored.<kind>.<category>` event."""
    answer = event.answer
    actions = plan_actions(event, deps.config)
    sent: list[str] = []
    already_sent: list[str] = []
    failure: tuple[RouteAction, Exception] | None = None
    if actions:
        async with deps.pool.acquire() as conn, conn.transaction():
            new = await _record(conn, event, actions)
            pending = [a for a in actions if a.action_id in new]
            already_sent = [a.routing_key() for a in actions if a.action_id not in new]
            for index, action in enumerate(pending):
                try:
                    await publish(deps.broker, action)
                except Exception as exc:
                    failure = (action, exc)
                    await conn.execute(
                        "DELETE FROM router_actions WHERE action_id = ANY($1::uuid[])",
                        [a.action_id for a in pending[index:]],
                    )
                    break
                sent.append(action.routing_key())
    log.info(
        "answer_routed",
        answer_id=answer.answer_id,
        kind=answer.kind,
        category=answer.category,
        supersedes=event.supersedes,
        sent=sent,
        already_sent=already_sent,
    )
    if failure is not None:
        action, error = failure
        if isinstance(error, PublishError):
            raise PermanentError(unroutable_reason(action)) from error
        raise error
