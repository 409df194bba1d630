"""/healthz, /readyz and /metrics of a service, on the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
from aio_pika.abc import AbstractChannel
from prometheus_client.parser import text_string_to_metric_families

from shared.events import WebhookReceived
from shared.health import health_app
from shared.messaging import make_broker, subscribe
from shared.topology import INGEST_HYDRATE, WRITTEN_TAP


async def _noop(_event: WebhookReceived) -> None:
    return None


async def test_ready_only_with_a_consumer_on_every_queue_and_depths_in_metrics(
    pool: asyncpg.Pool, amqp_url: str, channel: AbstractChannel
) -> None:
    broker = make_broker(amqp_url)
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, _noop)
    await broker.start()
    try:
        consumed = health_app(pool, broker, amqp_url, [INGEST_HYDRATE.name])
        unconsumed = health_app(pool, broker, amqp_url, [INGEST_HYDRATE.name, WRITTEN_TAP.name])
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=consumed), base_url="http://h"
            ) as ok,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=unconsumed), base_url="http://h"
            ) as lost,
        ):
            assert (await ok.get("/healthz")).json() == {"status": "ok"}
            ready = await ok.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["consumers:ingest.hydrate"] == "ok"
            not_ready = await lost.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["consumers:nps.written"] == "no consumer"
            metrics = (await ok.get("/metrics")).text
            assert 'nps_queue_consumers{queue="ingest.hydrate"} 1.0' in metrics
            assert 'nps_queue_messages{queue="ingest.hydrate"}' in metrics
    finally:
        await broker.stop()


async def test_not_ready_when_the_broker_is_gone(pool: asyncpg.Pool) -> None:
    broker = make_broker("amqp://guest:guest@127.0.0.1:1/")
    app = health_app(pool, broker, "amqp://guest:guest@127.0.0.1:1/", ["ingest.hydrate"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as h:
        reply = await h.get("/readyz")
    assert reply.status_code == 503
    assert reply.json()["checks"] == {"database": "ok", "broker": "disconnected"}


async def test_metrics_show_the_outbox_backlog(pool: asyncpg.Pool, amqp_url: str) -> None:
    broker = make_broker(amqp_url)
    app = health_app(pool, broker, amqp_url, [])
    message_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO outbox (message_id, routing_key, correlation_id, body, created_at)
           VALUES ($1, 'test.backlog', 'c', '{}', now() - interval '10 minutes')""",
        message_id,
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://h"
        ) as h:
            families = {
                family.name: family.samples[0].value
                for family in text_string_to_metric_families((await h.get("/metrics")).text)
                if family.name.startswith("nps_outbox_")
            }
    finally:
        await pool.execute("DELETE FROM outbox WHERE message_id = $1", message_id)
    assert families["nps_outbox_pending"] >= 1
    assert families["nps_outbox_oldest_pending_seconds"] >= 600
