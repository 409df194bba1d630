"""The whole RabbitMQ topology in one place, declared idempotently at start-up
(docs/architecture.md, RabbitMQ topology).

- `nps` (topic): every event, by routing key.
- `nps.dlx` (direct): dead letters, routed by the name of the queue they died in to `<queue>.dlq`.
- `nps.delay.<tier>` (fanout exchange + classic queue with a TTL): a message published there with
  the routing key `<queue>` waits `tier` and is dead-lettered through the default exchange straight
  back into `<queue>` only, so a retry never reaches other consumers of the same routing key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

EXCHANGE = "nps"
DLX = "nps.dlx"
DELAY_TIERS_S: tuple[int, ...] = (1, 5, 30, 120, 600)
WRITTEN_TAP_MAX = 100_000
DLQ_SUFFIX = ".dlq"


def dlq_name(queue: str) -> str:
    """The dead-letter queue of `queue`."""
    return queue + DLQ_SUFFIX


def dead_queue(dlq: str) -> str:
    """The queue whose dead letters the dead-letter queue `dlq` holds."""
    return dlq.removesuffix(DLQ_SUFFIX)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]
    max_length: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dlq(self) -> str:
        return dlq_name(self.name)


INGEST_HYDRATE = QueueSpec("ingest.hydrate", ("webhook.received",))
SCORING_SUBMISSIONS = QueueSpec("scoring.submissions", ("form.submitted",))
ROUTER_SCORED = QueueSpec("router.scored", ("nps.scored.#",))
CRM_SYNC_ACTIONS = QueueSpec(
    "crm_sync.actions",
    ("route.service", "route.marketing", "route.task", "route.contact", "route.stage"),
)
CRM_SYNC_SURVEYS = QueueSpec("crm_sync.surveys", ("survey.answered",))
# crm_sync's urgent lane (docs/crm_sync.md, Lanes): the router publishes urgent actions as
# `route.<action>.urgent`, which the bulk queue's exact bindings do not match.
CRM_SYNC_URGENT = QueueSpec("crm_sync.urgent", ("route.*.urgent",))
# Dispatch (docs/dispatch.md): sales closed, the survey page's links, opens, opt-outs and
# answers, and crm_sync's outcomes of dispatch's commands; crm_sync carries the commands out.
DISPATCH_SALES = QueueSpec("dispatch.sales", ("sale.closed",))
DISPATCH_LINKS = QueueSpec("dispatch.links", ("survey.ready",))
DISPATCH_OPENS = QueueSpec("dispatch.opens", ("survey.opened",))
DISPATCH_OPTOUTS = QueueSpec("dispatch.optouts", ("survey.opted_out",))
DISPATCH_ANSWERS = QueueSpec("dispatch.answers", ("survey.answered",))
DISPATCH_WRITTEN = QueueSpec(
    "dispatch.written",
    ("crm.written.nps_deal", "crm.written.survey_send", "crm.written.call_task"),
)
# Follow-up (docs/dispatch.md, Follow-up): the leads and tasks crm_sync created (and the outcome of
# dispatch's escalation tasks), followed until someone acts.
DISPATCH_FOLLOWUP = QueueSpec(
    "dispatch.followup",
    ("crm.written.service", "crm.written.marketing", "crm.written.task", "crm.written.call_task"),
)
DISPATCH_UPDATES_MAX = 10_000
# The portal's update events of leads and tasks (ingest forwards them): the followed one is read
# at once, in the follow-up's batch. Hints only (the scheduled reads stay), so bounded like the
# taps: past the bound the oldest are dropped (the broker dead-letters them, reason `maxlen`).
DISPATCH_UPDATES = QueueSpec(
    "dispatch.updates",
    ("portal.updated.lead", "portal.updated.task"),
    max_length=DISPATCH_UPDATES_MAX,
)
# The "Send NPS survey" robot's calls (the application publishes them): dispatch asks.
DISPATCH_ROBOTS = QueueSpec("dispatch.robots", ("robot.called",))
CRM_SYNC_DISPATCH = QueueSpec(
    "crm_sync.dispatch",
    (
        "dispatch.nps_deal",
        "dispatch.survey_send",
        "dispatch.call_task",
        "dispatch.robot_answer",
    ),
)
SURVEY_REQUESTS = QueueSpec("survey.requests", ("survey.requested",))
REGISTER_TAP_MAX = 100_000
# A bounded tap of the register's state events, so they are always routable (integrators bind
# their own queues to dispatch.request.#).
REGISTER_TAP = QueueSpec("dispatch.register", ("dispatch.request.#",), max_length=REGISTER_TAP_MAX)
# A bounded tap of crm.written.* so the outcome events are always routable and ops can peek at them.
WRITTEN_TAP = QueueSpec("nps.written", ("crm.written.#",), max_length=WRITTEN_TAP_MAX)

CORE_QUEUES: tuple[QueueSpec, ...] = (
    INGEST_HYDRATE,
    SCORING_SUBMISSIONS,
    ROUTER_SCORED,
    CRM_SYNC_ACTIONS,
    CRM_SYNC_SURVEYS,
    CRM_SYNC_URGENT,
    WRITTEN_TAP,
    DISPATCH_SALES,
    DISPATCH_LINKS,
    DISPATCH_OPENS,
    DISPATCH_OPTOUTS,
    DISPATCH_ANSWERS,
    DISPATCH_WRITTEN,
    DISPATCH_FOLLOWUP,
    DISPATCH_UPDATES,
    DISPATCH_ROBOTS,
    CRM_SYNC_DISPATCH,
    SURVEY_REQUESTS,
    REGISTER_TAP,
)


def delay_name(seconds: int) -> str:
    return f"nps.delay.{seconds}s"


def delay_tier(attempt: int) -> int:
    """The delay before retry number `attempt` (1-based): growing, capped at the last tier."""
    return DELAY_TIERS_S[min(attempt, len(DELAY_TIERS_S)) - 1]


def queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": spec.name,
    }
    if spec.max_length is not None:
        arguments["x-max-length"] = spec.max_length
        arguments["x-overflow"] = "drop-head"
    arguments.update(spec.extra)
    return arguments


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> None:
    """Declare `spec`'s queue, its bindings on `nps` and its dead-letter queue (idempotent)."""
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    dlq = await channel.declare_queue(spec.dlq, durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(dlx, routing_key=spec.name)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=queue_arguments(spec))
    for key in spec.bindings:
        await queue.bind(exchange, routing_key=key)


async def declare_topology(channel: AbstractChannel, extra: tuple[QueueSpec, ...] = ()) -> None:
    """Declare exchanges, delay tiers, the core queues and any `extra` (integrator) queues."""
    await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    for seconds in DELAY_TIERS_S:
        name = delay_name(seconds)
        delay_exchange = await channel.declare_exchange(
            name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        delay_queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": ""},
        )
        await delay_queue.bind(delay_exchange)
    for spec in (*CORE_QUEUES, *extra):
        await declare_queue(channel, spec)


async def declare(amqp_url: str, extra: tuple[QueueSpec, ...] = ()) -> None:
    """Connect, declare everything, disconnect (used by `nps migrate` and at service start)."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, extra)
