"""RabbitMQ adapters: the broker, event publishing, and the consumer wrapper with retry/DLQ policy.

Publishing (docs/architecture.md, Events): JSON, persistent, `message_id` = `event_id`,
publisher-confirmed, `mandatory` with a raise on return (an unroutable message is an error, never
a silent drop).

Consuming: `subscribe()` registers a handler `async def handler(event) -> None` for a queue. The
wrapper parses the body into the event model, binds the correlation id for logging, runs the
handler and only then acks. Failures:
- `PermanentError` or a body that does not parse → the DLQ with the reason in headers;
- `DropMessage` (the work belongs to a portal that uninstalled the application) → acked and
  dropped with one log line (`message_dropped`) and `nps_messages_dropped_total`, neither retried
  nor dead-lettered;
- anything else → retried through the delay tiers with growing delays, at most `max_attempts`
  times, then the DLQ. A retry goes back to this queue only.

`around` wraps the handler: it gets the parsed event, the message and the handler, and may run
the handler or set the message aside instead (`park`: published, confirmed, into another queue
before the wrapper acks it; crm_sync's held queues of a portal at its ceiling, docs/crm_sync.md).
A queue consumed on behalf of another (`source`: such a held queue) applies the other's policy:
retries go back to it and dead letters to its DLQ.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.subscriber import RabbitSubscriber
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from shared.events import Event
from shared.logging import bind_message_context, get_logger
from shared.topology import DELAY_TIERS_S, DLX, EXCHANGE, QueueSpec, delay_name, delay_tier

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None]]
Around = Callable[[E, RabbitMessage, Handler[E]], Awaitable[None]]
"""Runs instead of the handler: given the event, its message and the handler."""

ATTEMPT_HEADER = "x-nps-attempt"
REASON_HEADER = "x-nps-reason"

NPS_EXCHANGE = RabbitExchange(EXCHANGE, type=ExchangeType.TOPIC, durable=True)
DLX_EXCHANGE = RabbitExchange(DLX, type=ExchangeType.DIRECT, durable=True)
DELAY_EXCHANGES = {
    seconds: RabbitExchange(delay_name(seconds), type=ExchangeType.FANOUT, durable=True)
    for seconds in DELAY_TIERS_S
}

MESSAGES_IN = Counter("nps_messages_in_total", "Messages received", ["queue"])
MESSAGES_OUT = Counter("nps_messages_published_total", "Events published", ["routing_key"])
MESSAGES_FAILED = Counter(
    "nps_messages_failed_total", "Messages that failed a handler", ["queue", "outcome"]
)
MESSAGES_DROPPED = Counter(
    "nps_messages_dropped_total",
    "Messages dropped because their portal is no longer served (the application uninstalled)",
    ["queue"],
)
HANDLER_SECONDS = Histogram("nps_handler_seconds", "Handler latency", ["queue"])

log = get_logger(__name__)


class PermanentError(Exception):
    """Processing can never succeed (bad data, a 4xx from the portal): dead-letter at once."""


class DropMessage(Exception):  # noqa: N818 - an instruction to the consumer, not a failure
    """Nothing is left to do for this message and nothing went wrong: its portal uninstalled the
    application (or its tokens were revoked). Acked and counted, never retried or dead-lettered,
    so an uninstall never turns into an error storm."""


def make_broker(amqp_url: str, prefetch: int = 32) -> RabbitBroker:
    """A broker whose channel raises on returned (unroutable) messages.

    Handlers take the message itself and parse it (`subscribe`), so dependency injection is
    off: FastStream resolves a `Context` parameter in a worker thread, a thread hop per message.
    """
    return RabbitBroker(
        amqp_url,
        default_channel=Channel(on_return_raises=True, prefetch_count=prefetch),
        logger=None,
        graceful_timeout=20.0,
        apply_types=False,
    )


async def _as_is(message: RabbitMessage) -> RabbitMessage:
    """The decoder of `subscribe`'s handlers: the message itself, body untouched."""
    return message


async def publish_json(
    broker: RabbitBroker,
    body: Any,
    *,
    routing_key: str,
    message_id: str,
    correlation_id: str,
    confirm_timeout_s: float = 10.0,
) -> None:
    """Publish a JSON body on `nps`, persistent and confirmed; raises if no queue takes it."""
    await broker.publish(
        body,
        exchange=NPS_EXCHANGE,
        routing_key=routing_key,
        persist=True,
        mandatory=True,
        message_id=message_id,
        correlation_id=correlation_id,
        content_type="application/json",
        timeout=confirm_timeout_s,
    )
    MESSAGES_OUT.labels(routing_key=routing_key).inc()


async def publish(broker: RabbitBroker, event: Event) -> None:
    """Publish one event (see `publish_json`)."""
    await publish_json(
        broker,
        event.model_dump(mode="json"),
        routing_key=event.routing_key(),
        message_id=str(event.event_id),
        correlation_id=event.correlation_id,
    )


def _header_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _forward(
    broker: RabbitBroker,
    message: RabbitMessage,
    exchange: RabbitExchange | None,
    routing_key: str,
    headers: dict[str, Any],
) -> None:
    merged = {k: v for k, v in message.headers.items() if not k.startswith("x-death")}
    merged.update(headers)
    await broker.publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        persist=True,
        mandatory=True,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type or "application/json",
        headers=merged,
    )


async def dead_letter(
    broker: RabbitBroker, message: RabbitMessage, queue: str, reason: str, attempts: int
) -> None:
    """Move `message` to `<queue>.dlq` with why, when and after how many attempts."""
    await _forward(
        broker,
        message,
        DLX_EXCHANGE,
        queue,
        {
            REASON_HEADER: reason[:2000],
            "x-nps-queue": queue,
            "x-nps-attempts": attempts,
            "x-nps-failed-at": datetime.now(UTC).isoformat(),
            "x-nps-routing-key": message.raw_message.routing_key or "",
        },
    )


async def park(broker: RabbitBroker, message: RabbitMessage, queue: str) -> None:
    """Put `message` as it is (body, ids, headers) into `queue` through the default exchange,
    persistent and confirmed: once this returns the broker holds it, so acking the original
    loses nothing (a crash in between leaves both, which the handler's idempotency absorbs)."""
    await _forward(broker, message, None, queue, {})


def subscribe(
    broker: RabbitBroker,
    spec: QueueSpec,
    model: type[E],
    handler: Handler[E],
    *,
    max_attempts: int = 8,
    prefetch: int | None = None,
    around: Around[E] | None = None,
    source: str | None = None,
) -> RabbitSubscriber:
    """Consume `spec.name` (or `source` on its behalf) with `handler` (through `around`, if
    given), applying the retry/DLQ policy described above. With `prefetch`, the queue gets a
    channel of its own with that many unacked messages, so another queue's backlog in flight
    never holds its deliveries back. A `source` queue's subscriber is added to a running broker
    (not kept for a restart of the broker): the caller starts it, and keeps it (the broker holds
    it only weakly: a garbage collection takes a subscriber nobody else holds)."""
    queue = spec.name

    async def on_message(message: RabbitMessage) -> None:
        MESSAGES_IN.labels(queue=queue).inc()
        attempt = int(_header_str(message.headers.get(ATTEMPT_HEADER, 0)))
        bind_message_context(queue=queue, message_id=message.message_id, attempt=attempt)
        try:
            event = model.model_validate_json(message.body)
        except ValidationError as exc:
            reason = f"invalid {model.__name__}: {exc.errors(include_url=False)}"
            log.error("message_invalid", reason=reason)
            MESSAGES_FAILED.labels(queue=queue, outcome="dlq").inc()
            await dead_letter(broker, message, queue, reason, attempt + 1)
            await message.ack()
            return
        bind_message_context(
            queue=queue,
            event_id=str(event.event_id),
            correlation_id=event.correlation_id,
            attempt=attempt,
        )
        started = time.perf_counter()
        try:
            if around is None:
                await handler(event)
            else:
                await around(event, message, handler)
        except DropMessage as exc:
            log.info("message_dropped", reason=str(exc))
            MESSAGES_DROPPED.labels(queue=queue).inc()
        except PermanentError as exc:
            log.error("message_dead_lettered", reason=str(exc))
            MESSAGES_FAILED.labels(queue=queue, outcome="dlq").inc()
            await dead_letter(broker, message, queue, str(exc), attempt + 1)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if attempt + 1 >= max_attempts:
                log.error("message_retries_exhausted", reason=reason, attempts=attempt + 1)
                MESSAGES_FAILED.labels(queue=queue, outcome="dlq").inc()
                reason = f"after {attempt + 1} attempts: {reason}"
                await dead_letter(broker, message, queue, reason, attempt + 1)
            else:
                seconds = delay_tier(attempt + 1)
                log.warning("message_retry_scheduled", reason=reason, delay_s=seconds)
                MESSAGES_FAILED.labels(queue=queue, outcome="retry").inc()
                await _forward(
                    broker,
                    message,
                    DELAY_EXCHANGES[seconds],
                    queue,
                    {ATTEMPT_HEADER: attempt + 1, REASON_HEADER: reason[:2000]},
                )
        finally:
            HANDLER_SECONDS.labels(queue=queue).observe(time.perf_counter() - started)
        await message.ack()

    subscriber = broker.subscriber(
        RabbitQueue(source or spec.name, declare=False),
        channel=None if prefetch is None else Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_as_is,
        title=f"{source or spec.name}:{model.__name__}",
        persistent=source is None,
        include_in_schema=source is None,
    )
    subscriber(on_message)
    return subscriber
