"""`nps conflicts`, `nps audit` and `nps undo` as an operator runs them (the sandbox portal over
HTTP, the session's database)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from services.cli import app
from services.sandbox.app import create_app
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from shared.db import create_pool
from shared.events import PortalRef
from shared.portal_config import load_portal_config
from shared.settings import get_settings
from tests.support.crm_sync import (
    CONFIG_PATH,
    SCORE,
    answer,
    blank_laser,
    client_for,
    contact,
    contacts_where,
    legacy_laser,
    new_portal,
    portal_ref,
    route,
    writers,
)


@pytest.fixture
def served() -> Iterator[tuple[SandboxPortal, str]]:
    """A demo portal served over HTTP from a thread; yields it with its webhook URL."""
    portal = new_portal()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(portal), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the sandbox did not start"
        time.sleep(0.01)
    yield portal, f"http://127.0.0.1:{port}/rest/{portal.user_id}/{portal.secret}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def cli_env(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("NPS_CONFIG", str(CONFIG_PATH))
    monkeypatch.setenv("LOG_LEVEL", "warning")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def deployment(cli_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PortalRef:
    """The portal the deployment serves, pinned by `portal.member_id` in the YAML `nps` reads."""
    ref = portal_ref()
    data = yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))
    data["portal"]["member_id"] = ref.member_id
    pinned = tmp_path / "portal.yaml"
    pinned.write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setenv("NPS_CONFIG", str(pinned))
    get_settings.cache_clear()
    return ref


def patch_contacts(
    pg_dsn: str, portal: SandboxPortal, ref: PortalRef, contact_ids: list[int], score: int
) -> str:
    """Patch the contacts of portal `ref` through the writer (in a loop of its own); returns
    the portal key."""

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


def test_conflicts_lists_every_legacy_value_left_alone(
    pg_dsn: str, deployment: PortalRef, served: tuple[SandboxPortal, str]
) -> None:
    portal, _ = served
    cid = contacts_where(portal, legacy_laser)[0]
    legacy = contact(portal, cid)[SCORE]
    key = patch_contacts(pg_dsn, portal, deployment, [cid], score=3)
    runner = CliRunner()

    table = runner.invoke(app, ["conflicts", "--contact", str(cid)])
    listed = runner.invoke(app, ["conflicts", "--json", "--contact", str(cid)])

    assert table.exit_code == 0, table.output
    assert table.output.startswith(f"portal {key}\n")
    assert f"contact {cid}  {SCORE}  [legacy]" in table.output
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert {(r["field"], r["reason"]) for r in rows} == {
        (SCORE, "legacy"),
        ("UF_CRM_NPS_LASER_A_DATE", "legacy"),
    }
    score_row = next(r for r in rows if r["field"] == SCORE)
    assert (score_row["current"], score_row["proposed"]) == (legacy, "3")


def test_audit_shows_before_and_after_and_undo_restores(
    pg_dsn: str,
    deployment: PortalRef,
    served: tuple[SandboxPortal, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    portal, webhook = served
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", webhook)
    cid = contacts_where(portal, blank_laser)[0]
    key = patch_contacts(pg_dsn, portal, deployment, [cid], score=6)
    runner = CliRunner()

    audit = runner.invoke(app, ["audit", str(cid), "--json"])
    assert audit.exit_code == 0, audit.output
    writes = json.loads(audit.output)
    score_write = next(w for w in writes if w["field"] == SCORE)
    assert (score_write["before"], score_write["after"], score_write["kind"]) == (
        None,
        "6",
        "answer",
    )

    undone = runner.invoke(app, ["undo", str(score_write["id"])])
    assert undone.exit_code == 0, undone.output
    assert "restored" in undone.output
    assert not contact(portal, cid)[SCORE]

    again = runner.invoke(app, ["undo", str(score_write["id"])])
    assert again.exit_code == 1
    assert "already undone" in again.output

    table = runner.invoke(app, ["audit", str(cid)])
    assert table.output.startswith(f"contact {cid} on portal {key}\n")
    assert f"{SCORE}  undo: '6' → '(empty)'  (undoes #{score_write['id']})" in table.output


def test_undo_refuses_a_value_edited_since(
    pg_dsn: str,
    deployment: PortalRef,
    served: tuple[SandboxPortal, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    portal, webhook = served
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", webhook)
    cid = contacts_where(portal, blank_laser)[0]
    patch_contacts(pg_dsn, portal, deployment, [cid], score=6)
    writes = json.loads(CliRunner().invoke(app, ["audit", str(cid), "--json"]).output)
    score_write = next(w for w in writes if w["field"] == SCORE)
    portal.crm.update(CONTACT, cid, {SCORE: "6 (checked by phone)"}, method="manual")

    refused = CliRunner().invoke(app, ["undo", str(score_write["id"])])

    assert refused.exit_code == 1
    assert "changed since" in refused.output
    assert contact(portal, cid)[SCORE] == "6 (checked by phone)"


def test_audit_conflicts_and_undo_keep_to_the_served_portal(
    pg_dsn: str,
    deployment: PortalRef,
    served: tuple[SandboxPortal, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes recorded for another portal (say, one that once sent a forged event) are not
    shown as this portal's, and `nps undo` never applies them to this portal."""
    portal, webhook = served
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", webhook)
    cid = contacts_where(portal, blank_laser)[0]
    other = patch_contacts(pg_dsn, portal, portal_ref(), [cid], score=6)
    runner = CliRunner()

    audit = runner.invoke(app, ["audit", str(cid)])
    conflicts = runner.invoke(app, ["conflicts", "--json", "--contact", str(cid)])
    theirs = json.loads(runner.invoke(app, ["audit", str(cid), "--json", "--portal", other]).output)
    write = next(w for w in theirs if w["field"] == SCORE)
    refused = runner.invoke(app, ["undo", str(write["id"])])

    assert audit.exit_code == 0, audit.output
    assert audit.output == (
        f"b24-nps has written nothing into contact {cid} on portal {deployment.key}\n"
    )
    assert json.loads(conflicts.output) == []
    assert {w["portal"] for w in theirs} == {other}
    assert refused.exit_code == 1
    assert f"write #{write['id']} was made on portal {other}, not on {deployment.key}" in (
        refused.output
    )
    assert contact(portal, cid)[SCORE] == "6"


def test_without_a_known_portal_the_commands_say_so(pg_dsn: str, cli_env: None) -> None:
    async def forget() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("DELETE FROM ingest_portal")
        finally:
            await conn.close()

    asyncio.run(forget())
    for command in (["audit", "1"], ["conflicts"], ["undo", "1"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, (command, result.output)
        assert "the portal this deployment serves is not known yet" in result.output, command


def test_in_webhook_mode_undo_takes_the_served_portal_only(deployment: PortalRef) -> None:
    """The webhook reaches the one portal served: `--portal` may name it, nothing else."""
    refused = CliRunner().invoke(app, ["undo", "1", "--portal", "elsewhere.bitrix24.ru"])
    assert refused.exit_code == 2
    assert refused.stderr == (
        "--portal 'elsewhere.bitrix24.ru': this deployment calls one portal through its webhook"
        f" (NPS_MODE=webhook), the portal it serves ({deployment.member_id!r}); expected its"
        " member id or domain, or no --portal\n"
    )
    named = CliRunner().invoke(app, ["undo", "999999999", "--portal", str(deployment.member_id)])
    assert named.exit_code == 1
    assert "there is no write #999999999" in named.stderr
