"""The whole pipeline as separate processes (sandbox portal, ingest, scoring, router, crm_sync)
against the session's real PostgreSQL database and RabbitMQ vhost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from services.ops.stack import Stack
from tests.conftest import EXAMPLE_CONFIG

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"


@pytest.fixture
async def stack(
    pg_dsn: str,
    amqp_url: str,
    channel: aio_pika.abc.AbstractChannel,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    """A started stack (demo portal, no rate limits), stopped after the test; logs in artifacts/."""
    stack = Stack(
        database_url=pg_dsn,
        rabbitmq_url=amqp_url,
        config=EXAMPLE_CONFIG,
        log_dir=ARTIFACTS / request.node.name,
        sandbox_args=["--seed", "demo", "--no-limits"],
        extra_env={"SWEEP_INTERVAL_S": "2"},
    )
    await asyncio.to_thread(stack.start_all)
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)
