"""Rules as consumers: an integrator's reaction is one module that binds a queue of its own.

    consumer = rule_consumer("telegram_alert", "nps.scored.equipment.detractor", NpsScored, alert)
    run = consumer.run          # `nps run my_module`

The queue (`name`) is a quorum queue with its own dead-letter queue (`<name>.dlq`), declared at
start-up; the handler gets the parsed event and runs under the pipeline's consumer policy: the
message is acked only after the handler returns, `PermanentError` dead-letters it at once, any
other exception retries it with growing delays (only this queue sees the retry), then
dead-letters it. Delivery is at least once: `event_id` (and `action_id` for `route.*`) is stable
across redeliveries, for handlers whose effect must not happen twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import aio_pika

from shared.events import Event
from shared.messaging import Handler, subscribe
from shared.service import Runtime
from shared.service import run as run_service
from shared.settings import Settings
from shared.topology import CORE_QUEUES, DLQ_SUFFIX, QueueSpec, declare_queue

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
EventT = TypeVar("EventT", bound=Event)


@dataclass(frozen=True)
class RuleConsumer(Generic[EventT]):
    """An integrator's queue, what it is bound to, and the handler of its events."""

    name: str
    bindings: tuple[str, ...]
    model: type[EventT]
    handler: Handler[EventT]

    @property
    def queue(self) -> QueueSpec:
        return QueueSpec(self.name, self.bindings)

    async def wire(self, runtime: Runtime) -> None:
        """Declare the queue (with its bindings and DLQ) and subscribe the handler to it."""
        connection = await aio_pika.connect(runtime.settings.rabbitmq_url.get_secret_value())
        async with connection:
            await declare_queue(await connection.channel(), self.queue)
        subscribe(
            runtime.broker,
            self.queue,
            self.model,
            self.handler,
            max_attempts=runtime.settings.retry_max_attempts,
        )

    def run(self, settings: Settings) -> None:
        """Blocking entry point for `nps run <module>`: runs until SIGTERM or Ctrl-C."""
        run_service(self.name, settings, self.wire)


def rule_consumer(
    name: str,
    bindings: str | Sequence[str],
    model: type[EventT],
    handler: Handler[EventT],
) -> RuleConsumer[EventT]:
    """A consumer of queue `name`, bound to `bindings` (topic patterns on `nps`), for `model`.

    Each binding must carry `model`'s events: `nps.scored.<kind>.<category>` patterns for
    `NpsScored`, `route.<action>` for `RouteAction`, and so on.
    """
    keys = (bindings,) if isinstance(bindings, str) else tuple(bindings)
    if not _NAME.match(name) or name.endswith(DLQ_SUFFIX):
        raise ValueError(
            f"queue name {name!r}: use lower-case letters, digits, '_', '-', '.' "
            f"(and not the {DLQ_SUFFIX} suffix)"
        )
    if name in {spec.name for spec in CORE_QUEUES}:
        raise ValueError(f"queue name {name!r} belongs to the core pipeline; choose your own")
    if not keys:
        raise ValueError(f"{name}: give at least one binding, e.g. nps.scored.equipment.detractor")
    for key in keys:
        if key != model.NAME and not key.startswith(f"{model.NAME}."):
            raise ValueError(
                f"{name}: binding {key!r} does not carry {model.__name__} events "
                f"(their routing keys start with {model.NAME!r})"
            )
    return RuleConsumer(name=name, bindings=keys, model=model, handler=handler)
