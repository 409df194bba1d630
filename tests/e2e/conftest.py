"""The whole pipeline as separate processes (sandbox portal, ingest, scoring, router, crm_sync),
each test on a database and a RabbitMQ vhost of its own: nothing another test left behind (outbox
rows, queued messages, pending actions) can flow into it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.ops.stack import Stack
from shared.db import migrate
from tests.conftest import EXAMPLE_CONFIG
from tests.support import create_vhost, delete_vhost, with_path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"


@pytest.fixture
async def stack(
    pg_server: str, amqp_server: str, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """A started stack (demo portal, no rate limits), stopped after the test; logs in artifacts/."""
    name = f"nps_e2e_{uuid.uuid4().hex[:10]}"
    dsn = with_path(pg_server, f"/{name}")
    await migrate(dsn)
    amqp_url, vhost = create_vhost(amqp_server)
    stack = Stack(
        database_url=dsn,
        rabbitmq_url=amqp_url,
        config=EXAMPLE_CONFIG,
        log_dir=ARTIFACTS / request.node.name,
        sandbox_args=["--seed", "demo", "--no-limits"],
        extra_env={"SWEEP_INTERVAL_S": "2"},
    )
    try:
        await asyncio.to_thread(stack.start_all)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)
        if vhost is not None:
            delete_vhost(vhost)
        admin = await asyncpg.connect(with_path(pg_server, "/postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
