"""Each portal's configuration in application mode (shared/portal_store.py) on real PostgreSQL:
validated before it is stored, per portal, and a concurrent edit is refused, never overwritten."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared import portal_store
from shared.db import Conn
from shared.portal_config import ConfigError

EXAMPLE = (Path(__file__).parents[2] / "config" / "portal.example.yaml").read_text("utf-8")


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    async with pool.acquire() as connection:
        yield connection


@pytest.fixture
async def portals(pool: asyncpg.Pool) -> AsyncIterator[tuple[str, str]]:
    keys = (f"store-a-{uuid.uuid4().hex[:8]}", f"store-b-{uuid.uuid4().hex[:8]}")
    yield keys
    await pool.execute("DELETE FROM portal_configs WHERE portal = ANY($1)", list(keys))


async def test_a_valid_configuration_is_stored_per_portal_and_versioned(
    conn: Conn, portals: tuple[str, str]
) -> None:
    alpha, beta = portals
    assert await portal_store.load(conn, alpha) is None
    first = await portal_store.save(conn, alpha, EXAMPLE, by="user 1", expected_version=None)
    assert (first.version, first.updated_by) == (1, "user 1")
    changed = EXAMPLE.replace("timezone: UTC ", "timezone: Asia/Almaty ", 1)
    assert changed != EXAMPLE
    second = await portal_store.save(conn, alpha, changed, by="user 2", expected_version=1)
    assert second.version == 2
    assert second.config.portal.timezone == "Asia/Almaty"
    assert await portal_store.load(conn, beta) is None
    stored = await portal_store.load_all(conn)
    assert stored[alpha].text == changed
    assert beta not in stored


async def test_an_invalid_configuration_names_the_problem_and_stores_nothing(
    conn: Conn, portals: tuple[str, str]
) -> None:
    alpha, _ = portals
    with pytest.raises(ConfigError, match="not valid YAML"):
        await portal_store.save(conn, alpha, "portal: [", by=None, expected_version=None)
    with pytest.raises(ConfigError, match="is invalid"):
        await portal_store.save(conn, alpha, "portal: {}\n", by=None, expected_version=None)
    assert await portal_store.load(conn, alpha) is None


async def test_an_edit_from_a_stale_version_is_refused(
    conn: Conn, portals: tuple[str, str]
) -> None:
    alpha, _ = portals
    await portal_store.save(conn, alpha, EXAMPLE, by=None, expected_version=None)
    await portal_store.save(conn, alpha, EXAMPLE, by=None, expected_version=1)
    with pytest.raises(portal_store.StaleConfigError, match="changed meanwhile"):
        await portal_store.save(conn, alpha, EXAMPLE, by=None, expected_version=1)
    stored = await portal_store.load(conn, alpha)
    assert stored is not None
    assert stored.version == 2
