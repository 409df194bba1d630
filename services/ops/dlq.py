"""Dead-letter queues: list, show, replay and discard what the pipeline gave up on
(docs/architecture.md, RabbitMQ topology).

Dead letters are counted here for every reader (`counts`: the dashboard's ops view through
`dead_letter_sizes`, the chaos verdict); the queue names come from `shared/topology.py`.

Messages are read with `basic.get` and put back (`nack` with requeue) unless they are replayed
or discarded, so listing never loses anything. A replay publishes the original body to the queue
it died in (through the default exchange, so no other consumer sees it twice), with the attempt
counter reset, and only then removes it from the DLQ. A discard first records the message, who
discarded it and why in `ops_dlq_discards` (ops's table), and removes it from the DLQ only once
that record is committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPException
from pydantic import ValidationError

from shared.db import Conn
from shared.events import PortalRef
from shared.logging import get_logger
from shared.messaging import ATTEMPT_HEADER, REASON_HEADER
from shared.topology import CORE_QUEUES, DLQ_SUFFIX, dead_queue, dlq_name

log = get_logger(__name__)

BROKER_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str
    reason: str
    attempts: int
    failed_at: str
    routing_key: str
    correlation_id: str | None
    body: Any

    @property
    def portal(self) -> PortalRef | None:
        """The portal the message names (None: it names none)."""
        return portal_ref_of(self.body)

    def of(self, portal: str | None) -> bool:
        """Whether this letter is of the portal keyed `portal` (its member id; None: any)."""
        if portal is None:
            return True
        ref = self.portal
        return ref is not None and portal in {ref.key, ref.member_id}

    def summary(self) -> dict[str, Any]:
        ref = self.portal
        return {
            "queue": self.queue,
            "portal": None if ref is None else ref.key,
            "message_id": self.message_id,
            "reason": self.reason,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "routing_key": self.routing_key,
            "correlation_id": self.correlation_id,
        }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    try:
        body: Any = json.loads(message.body)
    except ValueError:
        body = message.body.decode("utf-8", errors="replace")
    return DeadLetter(
        queue=queue,
        message_id=message.message_id or "",
        reason=_text(headers.get(REASON_HEADER, "rejected by the broker")),
        attempts=int(_text(headers.get("x-nps-attempts", 0))),
        failed_at=_text(headers.get("x-nps-failed-at", "")),
        routing_key=_text(headers.get("x-nps-routing-key", "")),
        correlation_id=message.correlation_id,
        body=body,
    )


def core_queues() -> list[str]:
    """The pipeline's queues, each with its dead-letter queue."""
    return [spec.name for spec in CORE_QUEUES]


def dlq_names(queues: Iterable[str] | None = None) -> list[str]:
    names = list(queues) if queues else core_queues()
    return [name if name.endswith(DLQ_SUFFIX) else dlq_name(name) for name in names]


async def counts(channel: AbstractChannel, queues: Iterable[str] | None = None) -> dict[str, int]:
    """How many messages wait in each dead-letter queue."""
    # Straight to the protocol channel: a robust channel answers passive declarations from cache.
    underlay = await channel.get_underlay_channel()
    result: dict[str, int] = {}
    for name in dlq_names(queues):
        declared = await underlay.queue_declare(name, passive=True)
        result[dead_queue(name)] = declared.message_count or 0
    return result


async def dead_letter_sizes(
    rabbitmq_url: str | None, connect_timeout_s: float = BROKER_TIMEOUT_S
) -> dict[str, int] | None:
    """Dead letters waiting per core queue; None when the broker cannot say (down, no topology)."""
    if rabbitmq_url is None:
        return None
    try:
        connection = await aio_pika.connect(rabbitmq_url, timeout=connect_timeout_s)
        async with connection:
            return await counts(await connection.channel())
    except (OSError, TimeoutError, AMQPException) as exc:
        log.warning("dead_letters_unknown", error=type(exc).__name__)
        return None


async def _drain(channel: AbstractChannel, dlq: str, limit: int) -> list[AbstractIncomingMessage]:
    queue = await channel.get_queue(dlq)
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < limit:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


async def list_dead_letters(
    channel: AbstractChannel,
    queues: Iterable[str] | None = None,
    limit: int = 100,
    portal: str | None = None,
) -> list[DeadLetter]:
    """Up to `limit` dead letters per queue (of `portal` only, unless None); all of them stay
    in their DLQ."""
    found: list[DeadLetter] = []
    for dlq in dlq_names(queues):
        messages = await _drain(channel, dlq, limit)
        letters = [_parse(dead_queue(dlq), m) for m in messages]
        found.extend(letter for letter in letters if letter.of(portal))
        for message in messages:
            await message.nack(requeue=True)
    return found


async def replay(
    channel: AbstractChannel,
    message_ids: set[str] | None = None,
    queues: Iterable[str] | None = None,
    limit: int = 10_000,
    portal: str | None = None,
) -> list[DeadLetter]:
    """Send dead letters (all, or those in `message_ids`; of `portal` only, unless None) back
    to their queue; returns them."""
    replayed: list[DeadLetter] = []
    for dlq in dlq_names(queues):
        queue_name = dead_queue(dlq)
        for message in await _drain(channel, dlq, limit):
            wanted = message_ids is None or message.message_id in message_ids
            if not wanted or not _parse(queue_name, message).of(portal):
                await message.nack(requeue=True)
                continue
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                if not k.startswith(("x-death", "x-nps-"))
            }
            headers[ATTEMPT_HEADER] = 0
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    content_type=message.content_type or "application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                ),
                routing_key=queue_name,
                mandatory=True,
            )
            await message.ack()
            replayed.append(_parse(queue_name, message))
    return replayed


@dataclass(frozen=True)
class Discard:
    """A dead letter someone discarded: the record `nps dlq list --discarded` shows."""

    queue: str
    message_id: str
    failure: str
    reason: str
    discarded_by: str
    discarded_at: datetime
    portal: str | None
    """The key of the portal the message named (None: it named none)."""

    def summary(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "portal": self.portal,
            "message_id": self.message_id,
            "failure": self.failure,
            "reason": self.reason,
            "discarded_by": self.discarded_by,
            "discarded_at": self.discarded_at.isoformat(),
        }


def portal_ref_of(body: Any) -> PortalRef | None:
    """The portal a message names (its `portal`, at its top or in its `answer`); None when it
    names none."""
    holders = (body, body.get("answer")) if isinstance(body, dict) else ()
    for holder in holders:
        if isinstance(holder, dict) and isinstance(holder.get("portal"), dict):
            try:
                return PortalRef.model_validate(holder["portal"])
            except ValidationError:
                return None
    return None


def portal_of(body: Any) -> str | None:
    """The key of the portal a message names (`PortalRef.key`); None when it names none."""
    ref = portal_ref_of(body)
    return None if ref is None else ref.key


async def discard(
    channel: AbstractChannel,
    conn: Conn,
    *,
    reason: str,
    by: str,
    message_ids: set[str] | None = None,
    queues: Iterable[str] | None = None,
    limit: int = 10_000,
    portal: str | None = None,
) -> list[DeadLetter]:
    """Remove dead letters (all, or those in `message_ids`; of `portal` only, unless None) for
    good, each recorded first."""
    if not reason.strip() or not by.strip():
        raise ValueError("a discard needs a reason and who discards")
    discarded: list[DeadLetter] = []
    for dlq in dlq_names(queues):
        queue_name = dlq[: -len(DLQ_SUFFIX)]
        for message in await _drain(channel, dlq, limit):
            letter = _parse(queue_name, message)
            wanted = message_ids is None or message.message_id in message_ids
            if not wanted or not letter.of(portal):
                await message.nack(requeue=True)
                continue
            try:
                async with conn.transaction():
                    await conn.execute(
                        """INSERT INTO ops_dlq_discards (queue, message_id, routing_key,
                               correlation_id, failure, attempts, body, reason, discarded_by,
                               portal)
                           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)""",
                        letter.queue,
                        letter.message_id,
                        letter.routing_key,
                        letter.correlation_id,
                        letter.reason,
                        letter.attempts,
                        json.dumps(letter.body),
                        reason.strip(),
                        by.strip(),
                        portal_of(letter.body),
                    )
                    await message.ack()
            except BaseException:
                if not message.processed:
                    await message.nack(requeue=True)
                raise
            discarded.append(letter)
    return discarded


async def discarded(conn: Conn, limit: int = 100) -> list[Discard]:
    """The latest discards, newest first."""
    rows = await conn.fetch(
        """SELECT queue, message_id, failure, reason, discarded_by, discarded_at, portal
           FROM ops_dlq_discards ORDER BY discarded_at DESC, id DESC LIMIT $1""",
        limit,
    )
    return [Discard(**dict(row)) for row in rows]
