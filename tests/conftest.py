"""Fixtures for real RabbitMQ and PostgreSQL.

`DATABASE_URL` / `RABBITMQ_URL` (default: the local services) are used as the servers; each test
session gets its own database and its own RabbitMQ vhost, so tests can run while `make run` is up.
Where a server does not answer and a Docker engine does, a testcontainer stands in. Where neither
answers, the tests that need it fail loudly: nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from services.harness.scratch import scratch_database, scratch_name, scratch_vhost
from shared.db import create_pool
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, load_portal_config
from shared.settings import Settings
from tests.support import docker_available, purge_core_queues, reachable
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.smtp import Inbox, smtp_server

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", DEFAULT_PG)
    if reachable(url, 5432) or not docker_available():
        yield url
        return
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def amqp_server() -> Iterator[str]:
    url = os.environ.get("RABBITMQ_URL", DEFAULT_AMQP)
    if reachable(url, 5672) or not docker_available():
        yield url
        return
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management") as container:
        params = container.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
async def pg_dsn(pg_server: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test session."""
    async with scratch_database(pg_server, scratch_name("test")) as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture
def outbox() -> Outbox:
    """The test's own outbox: what it queues wakes only the relays the test runs on it."""
    return Outbox()


@pytest.fixture(scope="session")
async def amqp_url(amqp_server: str) -> AsyncIterator[str]:
    """A vhost of its own for this session (on a remote broker, without rabbitmqctl: the URL as
    is), with the whole topology declared."""
    async with scratch_vhost(amqp_server, scratch_name("test"), required=False) as url:
        yield url


@pytest.fixture(scope="session")
async def amqp_connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    yield connection
    await connection.close()


@pytest.fixture
async def channel(amqp_connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    """A channel on the session vhost, with the core queues purged for this test."""
    channel = await amqp_connection.channel()
    await purge_core_queues(channel)
    yield channel
    await channel.close()


@pytest.fixture(scope="session")
def portal_config() -> PortalConfig:
    return load_portal_config(EXAMPLE_CONFIG)


@pytest.fixture
def settings(pg_dsn: str, amqp_url: str) -> Settings:
    return Settings(
        rabbitmq_url=amqp_url,
        database_url=pg_dsn,
        database_pool_max=4,
        nps_config=EXAMPLE_CONFIG,
        bitrix24_webhook_url=None,
        bitrix24_app_token=None,
        _env_file=None,
    )


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server keeping what it receives, and its port."""
    handler = Inbox()
    with smtp_server(handler) as port:
        yield handler, port


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every end-to-end test in one xdist group: their stacks (a dozen processes and their
    connections each) run one at a time on one worker while the other worker runs the rest."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("e2e"))
