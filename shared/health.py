"""Liveness, readiness and metrics over HTTP for every service, and a uvicorn runner that
leaves signal handling to the service's own stop event.

Readiness fails when PostgreSQL does not answer, the broker is disconnected, or a queue this
process consumes has no consumer at all (a consumer silently lost after a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator, Sequence
from typing import Any

import aio_pika
import asyncpg
import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from faststream.rabbit import RabbitBroker
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

QUEUE_MESSAGES = Gauge("nps_queue_messages", "Messages ready in a queue (at scrape)", ["queue"])
QUEUE_CONSUMERS = Gauge("nps_queue_consumers", "Consumers on a queue (at scrape)", ["queue"])
OUTBOX_PENDING = Gauge("nps_outbox_pending", "Outbox rows not published yet (at scrape)")
OUTBOX_OLDEST = Gauge(
    "nps_outbox_oldest_pending_seconds",
    "Age of the oldest outbox row not published yet, 0 when none (at scrape)",
)


class QuietServer(uvicorn.Server):
    """A uvicorn server that does not take over SIGINT/SIGTERM: the service's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_http(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` until `stop` is set, then shut the server down gracefully."""
    # log_config=None: uvicorn's lines go through our logging set-up (JSON) instead of its own.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, log_config=None
    )
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    done, _pending = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task
    if task in done and not stop.is_set():
        raise RuntimeError(f"HTTP server on {host}:{port} stopped unexpectedly")


async def queue_states(amqp_url: str, queues: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(ready messages, consumers) of each queue, also exported as gauges."""
    states: dict[str, tuple[int, int]] = {}
    connection = await asyncio.wait_for(aio_pika.connect(amqp_url), 3)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            declared = (await channel.declare_queue(name, passive=True)).declaration_result
            messages, consumers = declared.message_count or 0, declared.consumer_count or 0
            QUEUE_MESSAGES.labels(queue=name).set(messages)
            QUEUE_CONSUMERS.labels(queue=name).set(consumers)
            states[name] = (messages, consumers)
    return states


async def outbox_backlog(pool: asyncpg.Pool) -> tuple[int, float]:
    """(rows not published yet, age in seconds of the oldest), also exported as gauges."""
    row = await asyncio.wait_for(
        pool.fetchrow(
            """SELECT count(*) AS pending,
                      coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
               FROM outbox WHERE published_at IS NULL"""
        ),
        3,
    )
    pending, oldest = (0, 0.0) if row is None else (int(row["pending"]), float(row["oldest"]))
    OUTBOX_PENDING.set(pending)
    OUTBOX_OLDEST.set(oldest)
    return pending, oldest


async def readiness(
    pool: asyncpg.Pool, broker: RabbitBroker, amqp_url: str, queues: Sequence[str]
) -> dict[str, str]:
    """Each dependency → "ok" or what is wrong."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), 3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = "ok" if await broker.ping(timeout=3) else "disconnected"
    if queues and checks["broker"] == "ok":
        try:
            for name, (_messages, consumers) in (await queue_states(amqp_url, queues)).items():
                checks[f"consumers:{name}"] = "ok" if consumers else "no consumer"
        except Exception as exc:
            checks["consumers"] = f"unknown: {type(exc).__name__}"
    return checks


def add_health_routes(
    app: FastAPI, pool: asyncpg.Pool, broker: RabbitBroker, amqp_url: str, queues: Sequence[str]
) -> None:
    """`/healthz` (alive), `/readyz` (dependencies and consumers), `/metrics` (Prometheus, with
    the queues' depths and the outbox backlog read at scrape)."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await readiness(pool, broker, amqp_url, queues)
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        # Depths and the outbox backlog are read at scrape; if one cannot be, the rest scrapes.
        if queues:
            with contextlib.suppress(Exception):
                await queue_states(amqp_url, queues)
        with contextlib.suppress(Exception):
            await outbox_backlog(pool)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def health_app(
    pool: asyncpg.Pool, broker: RabbitBroker, amqp_url: str, queues: Sequence[str]
) -> FastAPI:
    app = FastAPI(title="b24-nps health", docs_url=None, redoc_url=None, openapi_url=None)
    add_health_routes(app, pool, broker, amqp_url, queues)
    return app
