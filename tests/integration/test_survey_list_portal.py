"""`nps survey list` shows the register of the portal the deployment serves (issue #22): the
portal ingest learned, or `portal.member_id` when the portal YAML pins it, or the one chosen
with `--portal`; never another portal's requests."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app
from shared.settings import get_settings
from tests.support import forget_served_portal
from tests.support.paths import EXAMPLE_CONFIG


@pytest.fixture
def cli(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("NPS_CONFIG", str(EXAMPLE_CONFIG))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
async def register(pool: asyncpg.Pool) -> AsyncIterator[dict[str, int]]:
    """One request of each of two portals, by portal key: the contact asked."""
    contacts = {f"m-list-{uuid.uuid4().hex[:10]}": 900_000 + n for n in range(2)}
    await pool.executemany(
        """INSERT INTO dispatch_requests (request_id, portal, source, ref, survey, kind,
               category_id, contact_id, lang, channel, state)
           VALUES ($1, $2, 'campaign', 'c1', 'Laser A', 'segment', 12, $3, 'en', 'email',
                   'scheduled')""",
        [(uuid.uuid4(), portal, contact) for portal, contact in contacts.items()],
    )
    await forget_served_portal(pool)
    yield contacts
    await forget_served_portal(pool)


def listed(cli: CliRunner, contact: int, *portal: str) -> list[dict[str, object]]:
    result = cli.invoke(app, ["survey", "list", "--contact", str(contact), "--json", *portal])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


async def test_the_served_portals_register_only(
    cli: CliRunner, pool: asyncpg.Pool, register: dict[str, int]
) -> None:
    (served, mine), (other, theirs) = register.items()
    await pool.execute("INSERT INTO ingest_portal (member_id) VALUES ($1)", served)
    [row] = await asyncio.to_thread(listed, cli, mine)
    assert (row["portal"], row["contact_id"]) == (served, mine)
    assert await asyncio.to_thread(listed, cli, theirs) == []
    # Another portal's register, chosen by its key.
    [row] = await asyncio.to_thread(listed, cli, theirs, "--portal", other)
    assert (row["portal"], row["contact_id"]) == (other, theirs)
    assert await asyncio.to_thread(listed, cli, mine, "--portal", other) == []


async def test_a_pinned_portal_before_the_learned_one(
    cli: CliRunner,
    pool: asyncpg.Pool,
    register: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (learned, mine), (pinned, theirs) = register.items()
    await pool.execute("INSERT INTO ingest_portal (member_id) VALUES ($1)", learned)
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["portal"]["member_id"] = pinned
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("NPS_CONFIG", str(path))
    get_settings.cache_clear()
    [row] = await asyncio.to_thread(listed, cli, theirs)
    assert row["portal"] == pinned
    assert await asyncio.to_thread(listed, cli, mine) == []
