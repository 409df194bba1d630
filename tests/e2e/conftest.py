"""The whole pipeline as separate processes (sandbox portal, ingest, scoring, router, crm_sync),
each test on a database and a RabbitMQ vhost of its own: nothing another test left behind (outbox
rows, queued messages, pending actions) can flow into it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.harness.chaos import fault_stack
from services.harness.scratch import scratch
from services.harness.stack import Stack, running
from tests.support.paths import EXAMPLE_CONFIG

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"


@pytest.fixture
async def stack(
    pg_server: str, amqp_server: str, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """A started stack (demo portal, no rate limits), stopped after the test; logs in artifacts/."""
    async with (
        scratch("e2e", pg_server, amqp_server, vhost_required=False) as (dsn, amqp_url),
        running(fault_stack(dsn, amqp_url, EXAMPLE_CONFIG, ARTIFACTS / request.node.name)) as up,
    ):
        yield up
