"""`nps undo --answer`, the `nps conflicts` count and the commands a person runs after `make run`
with the sandbox portal and no YAML of their own (the sandbox portal over HTTP, the session's
database)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
import uvicorn
from typer.testing import CliRunner

from services.cli import app
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from shared.db import create_pool
from shared.events import PortalRef
from shared.portal_config import load_portal_config
from shared.settings import SANDBOX_SECRET, get_settings
from tests.support.crm_sync import (
    CONFIG_PATH,
    DATE,
    SCORE,
    answer,
    blank_laser,
    client_for,
    contact,
    contacts_where,
    legacy_laser,
    portal_ref,
    route,
    writers,
)


@contextmanager
def serving(portal: SandboxPortal) -> Iterator[int]:
    """`portal` served over HTTP from a thread; yields its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(portal), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the sandbox did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxPortal, int]]:
    """The demo portal as `make run` starts it (the sandbox's fixed secret), and its port."""
    portal = SandboxPortal(secret=SANDBOX_SECRET, limits=Limits.off())
    seed_demo(portal, config_path=CONFIG_PATH, contacts=60, seed=42)
    with serving(portal) as port:
        yield portal, port


@pytest.fixture
def env(pg_dsn: str, sandbox: tuple[SandboxPortal, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of `make run` with the sandbox: no portal URL, no NPS_CONFIG."""
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("SANDBOX_PORT", str(sandbox[1]))
    monkeypatch.setenv("LOG_LEVEL", "warning")
    for name in ("NPS_CONFIG", "BITRIX24_WEBHOOK_URL", "BITRIX24_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()


@pytest.fixture
def served(pg_dsn: str) -> Iterator[PortalRef]:
    """The portal the deployment serves, learned by ingest from its first event (the example
    YAML pins none)."""
    ref = portal_ref()

    async def learn(member_id: str | None) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("DELETE FROM ingest_portal")
            if member_id is not None:
                await conn.execute("INSERT INTO ingest_portal (member_id) VALUES ($1)", member_id)
        finally:
            await conn.close()

    asyncio.run(learn(ref.member_id))
    yield ref
    asyncio.run(learn(None))


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()


def patch_contacts(
    pg_dsn: str, portal: SandboxPortal, ref: PortalRef, contact_ids: list[int], score: int
) -> str:
    """Patch the contacts of portal `ref` through the writer (in a loop of its own); returns the
    portal key."""

    async def main() -> None:
        pool = await create_pool(pg_dsn, max_size=3)
        try:
            w = writers(pool, client_for(portal), load_portal_config(CONFIG_PATH))
            for cid in contact_ids:
                await w.contacts.patch(route(answer(ref, cid, score=score)))
        finally:
            await pool.close()

    asyncio.run(main())
    return ref.key


def writes_of(contact_id: int, portal_key: str) -> list[dict[str, object]]:
    audit = CliRunner().invoke(app, ["audit", str(contact_id), "--json", "--portal", portal_key])
    assert audit.exit_code == 0, audit.output
    rows: list[dict[str, object]] = json.loads(audit.output)
    return rows


def test_undo_of_an_answer_restores_every_field_it_wrote(
    pg_dsn: str, env: None, sandbox: tuple[SandboxPortal, int], served: PortalRef
) -> None:
    portal, _ = sandbox
    cid = contacts_where(portal, blank_laser)[0]
    key = patch_contacts(pg_dsn, portal, served, [cid], score=6)
    writes = writes_of(cid, key)
    assert {w["field"] for w in writes} >= {SCORE, DATE}
    answer_id = str(writes[0]["answer_id"])
    runner = CliRunner()

    undone = runner.invoke(app, ["undo", "--answer", answer_id])

    assert undone.exit_code == 0, undone.output
    assert undone.output.count("restored") == len(writes)
    assert not contact(portal, cid)[SCORE]
    assert not contact(portal, cid)[DATE]
    again = runner.invoke(app, ["undo", "--answer", answer_id])
    assert again.exit_code == 1
    assert "already undone" in again.output
    assert "Traceback" not in again.output


def test_undo_of_an_answer_leaves_a_field_edited_since(
    pg_dsn: str, env: None, sandbox: tuple[SandboxPortal, int], served: PortalRef
) -> None:
    portal, _ = sandbox
    cid = contacts_where(portal, blank_laser)[0]
    key = patch_contacts(pg_dsn, portal, served, [cid], score=6)
    answer_id = str(writes_of(cid, key)[0]["answer_id"])
    portal.crm.update(CONTACT, cid, {SCORE: "6 (checked by phone)"}, method="manual")

    undone = CliRunner().invoke(app, ["undo", "--answer", answer_id])

    assert undone.exit_code == 1
    assert "changed since" in undone.output
    assert f"restored {DATE} of contact {cid}" in undone.output
    assert contact(portal, cid)[SCORE] == "6 (checked by phone)"
    assert not contact(portal, cid)[DATE]


@pytest.mark.parametrize(
    "args", [["undo"], ["undo", "1", "--answer", "a-1"]], ids=["neither", "both"]
)
def test_undo_needs_a_write_or_an_answer(env: None, args: list[str]) -> None:
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2
    assert "--answer" in result.output
    assert "Traceback" not in result.output


def test_undo_with_the_sandbox_uses_the_yaml_make_run_uses(
    pg_dsn: str,
    env: None,
    sandbox: tuple[SandboxPortal, int],
    served: PortalRef,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No config/portal.yaml and no portal URL: `nps undo` reads the example YAML, as
    `nps run all` does, and calls the sandbox portal."""
    portal, _ = sandbox
    cid = contacts_where(portal, blank_laser)[0]
    key = patch_contacts(pg_dsn, portal, served, [cid], score=6)
    write = next(w for w in writes_of(cid, key) if w["field"] == SCORE)
    (tmp_path / "config").mkdir()
    shutil.copy(CONFIG_PATH, tmp_path / "config" / "portal.example.yaml")
    monkeypatch.chdir(tmp_path)

    undone = CliRunner().invoke(app, ["undo", str(write["id"])])

    assert undone.exit_code == 0, undone.output
    assert "restored" in undone.output
    assert not contact(portal, cid)[SCORE]


def test_conflicts_with_a_limit_says_how_many_there_are(
    pg_dsn: str, env: None, sandbox: tuple[SandboxPortal, int], served: PortalRef
) -> None:
    portal, _ = sandbox
    cids = contacts_where(portal, legacy_laser)[:2]
    key = patch_contacts(pg_dsn, portal, served, cids, score=3)
    runner = CliRunner()

    everything = json.loads(runner.invoke(app, ["conflicts", "--json", "--portal", key]).output)
    limited = runner.invoke(app, ["conflicts", "--portal", key, "--limit", "1"])
    whole = runner.invoke(app, ["conflicts", "--portal", key])

    total = len(everything)
    assert total >= 2
    assert limited.exit_code == 0, limited.output
    assert f"showing 1 of {total} conflict(s)" in limited.output
    assert whole.output.strip().endswith(f"{total} conflict(s)")
