"""`nps` in application mode (`NPS_MODE=app`, docs/app.md "The CLI in application mode") against
two sandbox portals over real HTTP on which the application is installed, and the session's
PostgreSQL: each command names its portal with `--portal` (member id or domain), reads that
portal's rows only, and `nps undo` restores on that portal through its own tokens, never on
another; no portal, or an unknown one, is one line naming the installed portals."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from services.cli import app
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox, portal_factory
from services.sandbox.seed import add_answer_items
from services.scoring.handlers import score_submission
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.events import PortalRef
from shared.outbox import Outbox
from shared.portal_config import load_portal_config
from shared.settings import get_settings
from tests.support import serving
from tests.support.app import APP, app_registration, install_pair
from tests.support.crm_sync import SCORE, answer, blank_laser, contact, contacts_where, route
from tests.support.crm_sync import writers as crm_writers
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.scoring import make_submission

CLIENT_ID = "local.nps.cli"
SECRET = "cli-secret"
LASER: dict[str, Any] = {"kind": "equipment", "category_id": 12, "segment": "Laser A"}


@dataclass
class Portals:
    sandbox: Sandbox
    book: TokenBook
    names: tuple[str, str]

    def portal(self, name: str) -> SandboxPortal:
        return self.sandbox.named[name].portal

    def key(self, name: str) -> str:
        return self.portal(name).member_id


@pytest.fixture
async def portals(pool: asyncpg.Pool) -> AsyncIterator[Portals]:
    """Two seeded sandbox portals served over HTTP, the application installed on both (their
    domains `<name>.sandbox.local`)."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"alpha-{suffix}", f"beta-{suffix}")
    default = SandboxPortal(limits=Limits.off())
    sandbox = Sandbox(
        default,
        registration=app_registration(CLIENT_ID, SECRET, handler_url=f"{APP}/app/frame"),
        factory=portal_factory(seed=str(EXAMPLE_CONFIG), clock=default.clock, seed_path=Path),
    )
    for name in names:
        sandbox.add(PortalSpec(name=name, contacts=12, sales=0, limits=Limits.off()))
    stub = httpx.MockTransport(lambda _request: httpx.Response(200, text="ok"))
    async with serving(create_sandbox_app(sandbox, event_transport=stub)) as url:
        sandbox.server.base_url = url
        book = TokenBook(pool, OAuthServer(AppCredentials(url, CLIENT_ID, SecretStr(SECRET))))
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for name in names:
                await install_pair(http, book, name, CLIENT_ID)
        world = Portals(sandbox, book, names)
        try:
            yield world
        finally:
            await book.oauth.aclose()
            keys = [world.key(name) for name in names]
            await pool.execute(
                "DELETE FROM bitrix24_app_portals WHERE member_id = ANY($1::text[])", keys
            )


@pytest.fixture
def cli(pg_dsn: str, portals: Portals, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """`nps` as an operator runs it in application mode (its own event loop: in a thread)."""
    assert portals.sandbox.server.base_url is not None
    for name, value in {
        "NPS_MODE": "app",
        "DATABASE_URL": pg_dsn,
        "NPS_CONFIG": str(EXAMPLE_CONFIG),
        "BITRIX24_OAUTH_URL": portals.sandbox.server.base_url,
        "BITRIX24_CLIENT_ID": CLIENT_ID,
        "BITRIX24_CLIENT_SECRET": SECRET,
        "LOG_LEVEL": "warning",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


async def nps(cli: CliRunner, *args: str) -> Result:
    return await asyncio.to_thread(cli.invoke, app, list(args))


async def test_a_command_without_its_portal_or_with_an_unknown_one_names_the_installed(
    cli: CliRunner, portals: Portals
) -> None:
    installed = [f"{portals.key(name)} ({name}.sandbox.local)" for name in portals.names]
    for command in (["report"], ["undo", "1"], ["audit", "7"], ["survey", "list"], ["sweep"]):
        result = await nps(cli, *command)
        assert result.exit_code == 2, (command, result.output)
        assert "--portal is required in application mode (NPS_MODE=app)" in result.stderr
        assert all(portal in result.stderr for portal in installed), command
        assert "Traceback" not in result.output
    unknown = await nps(cli, "undo", "1", "--portal", "nowhere.bitrix24.ru")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith(
        "--portal 'nowhere.bitrix24.ru': no portal with that member id or domain; expected the"
        " member id or domain of an installed portal; installed: "
    )


async def test_a_report_reads_the_chosen_portals_answers_only(
    cli: CliRunner, portals: Portals, pool: asyncpg.Pool
) -> None:
    alpha, beta = portals.names
    for name, scores in ((alpha, (10, 9)), (beta, (0, 3, 6))):
        for item, score in enumerate(scores, start=1):
            await score_submission(
                pool,
                Outbox(),
                make_submission(
                    ("EQ-LASER-A", score), item_id=item, member_id=portals.key(name), **LASER
                ),
            )

    async def answers(chosen: str) -> int:
        result = await nps(cli, "report", "--json", "--portal", chosen)
        assert result.exit_code == 0, result.output
        return sum(int(row["answers"]) for row in json.loads(result.stdout))

    assert await answers(portals.key(alpha)) == 2
    assert await answers(f"{beta}.sandbox.local") == 3
    assert await answers(f"https://{alpha.upper()}.sandbox.local/") == 2


async def test_undo_restores_on_the_portal_of_the_write_only(
    cli: CliRunner, portals: Portals, pool: asyncpg.Pool
) -> None:
    alpha, beta = portals.names
    on_alpha = portals.portal(alpha)
    cid = contacts_where(on_alpha, blank_laser)[0]
    ref = PortalRef(member_id=portals.key(alpha), domain=f"{alpha}.sandbox.local")
    session = portals.book.session(portals.key(alpha))
    async with Bitrix24Client(None, MemoryRateBudget(None), app=session) as client:
        writers = crm_writers(pool, client, load_portal_config(EXAMPLE_CONFIG))
        await writers.contacts.patch(route(answer(ref, cid, score=3)))
    assert contact(on_alpha, cid)[SCORE] == "3"
    on_beta = portals.portal(beta)
    theirs = {cid: dict(record) for cid, record in on_beta.crm.records(CONTACT).items()}

    shown = await nps(cli, "audit", str(cid), "--json", "--portal", f"{alpha}.sandbox.local")
    assert shown.exit_code == 0, shown.output
    write = next(w for w in json.loads(shown.stdout) if w["field"] == SCORE)
    elsewhere = await nps(cli, "audit", str(cid), "--json", "--portal", portals.key(beta))
    assert json.loads(elsewhere.stdout) == []

    # On beta: refused from alpha's records alone, nothing called or changed on either portal.
    calls = len(on_alpha.calls_report()["calls"])
    refused = await nps(cli, "undo", str(write["id"]), "--portal", f"{beta}.sandbox.local")
    assert refused.exit_code == 1
    assert (
        f"write #{write['id']} was made on portal {portals.key(alpha)}, not on"
        f" {portals.key(beta)}, the portal this undo is on: nothing was restored"
    ) in refused.stderr
    assert contact(on_alpha, cid)[SCORE] == "3"
    assert len(on_alpha.calls_report()["calls"]) == calls

    # On alpha, through alpha's own tokens: restored there, beta untouched.
    restored = await nps(cli, "undo", str(write["id"]), "--portal", portals.key(alpha))
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.startswith(f"restored {SCORE} of contact {cid}: '3' → (empty)")
    assert not contact(on_alpha, cid)[SCORE]
    assert {cid: dict(r) for cid, r in on_beta.crm.records(CONTACT).items()} == theirs
    assert on_beta.calls_report(method="crm.contact.update")["calls"] == []


async def test_a_sweep_lists_the_chosen_portals_items_into_its_own_rows(
    cli: CliRunner, portals: Portals, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha, beta = portals.names
    # No broker: what the sweep submits waits in the outbox (removed at the end).
    monkeypatch.setenv("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/")
    get_settings.cache_clear()
    on_beta = portals.portal(beta)
    contacts = sorted(on_beta.crm.records(CONTACT))[:3]
    add_answer_items(
        on_beta,
        [
            {"TITLE": "answer", "CATEGORY_ID": 12, "CONTACT_ID": c, "UF_CRM_5_SCORE": 9}
            for c in contacts
        ],
    )
    count = "SELECT count(*) FROM ingest_events WHERE portal = $1"
    try:
        swept = await nps(
            cli, "sweep", "--portal", f"{beta}.sandbox.local", "--since", "2000-01-01T00:00:00Z"
        )
        assert swept.exit_code == 0, swept.output
        listed = int(swept.stdout.split("listed ")[1].split(" ")[0])
        assert listed >= len(contacts)
        assert f"submitted {listed}; watermark" in swept.stdout
        assert "broker unreachable" in swept.stdout
        assert await pool.fetchval(count, portals.key(beta)) == listed
        assert await pool.fetchval(count, portals.key(alpha)) == 0
    finally:
        await pool.execute("DELETE FROM outbox")


async def test_a_stored_configuration_that_no_longer_validates_is_one_error_not_a_traceback(
    cli: CliRunner,
    portals: Portals,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A portal's configuration stored before an upgrade made it invalid (here a text with a
    format spec, refused since): each command that calls that portal stops naming it."""
    key = portals.key(portals.names[0])
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["survey_page"] = {"texts": {"en": {"question": "{company:>2000000000}"}}}
    await pool.execute(
        "INSERT INTO portal_configs (portal, yaml) VALUES ($1, $2)", key, yaml.safe_dump(data)
    )
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("1\n", encoding="utf-8")
    monkeypatch.setenv("SURVEY_KEYS", "k" * 32)
    try:
        for command, code in (
            (["survey", "campaign", "After the sale", "--csv", str(contacts)], 2),
            (["undo", "1"], 2),
            (["sweep"], 1),
            (["survey", "link", "--contact", "1", "--segment", "Laser A"], 1),
        ):
            result = await nps(cli, *command, "--portal", key)
            assert result.exit_code == code, (command, result.output)
            assert isinstance(result.exception, SystemExit), (command, result.exception)
            assert f"portal {key}'s stored configuration is invalid:" in result.stderr, command
            assert "survey_page: Value error, texts.en.question: placeholder" in result.stderr
    finally:
        await pool.execute("DELETE FROM portal_configs WHERE portal = $1", key)


async def test_config_check_installed_checks_that_portals_own_configuration_on_it(
    cli: CliRunner, portals: Portals, pool: asyncpg.Pool
) -> None:
    """`nps config check --installed`: the installed portal's stored configuration (else the
    YAML) against that portal, through its own tokens; a field it lacks is named; no portal, an
    unknown one or a stored configuration that no longer validates is one line."""
    alpha, beta = portals.names
    template = await nps(cli, "config", "check", "--installed", f"{beta}.sandbox.local")
    assert template.exit_code == 0, template.output
    assert f"portal {portals.key(beta)} ({beta}.sandbox.local): the YAML" in template.stdout
    assert "every configured field exists and its type fits" in template.stdout

    key = portals.key(alpha)
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["survey"]["fields"]["comment"] = "UF_CRM_5_NOT_THERE"
    await pool.execute(
        "INSERT INTO portal_configs (portal, yaml) VALUES ($1, $2)", key, yaml.safe_dump(data)
    )
    try:
        stored = await nps(cli, "config", "check", "--installed", key)
        assert stored.exit_code == 1, stored.output
        assert f"portal {key} ({alpha}.sandbox.local): its stored configuration" in stored.stdout
        assert "UF_CRM_5_NOT_THERE" in stored.stderr

        data["survey_page"] = {"texts": {"en": {"question": "{company!r}"}}}
        await pool.execute(
            "UPDATE portal_configs SET yaml = $2 WHERE portal = $1", key, yaml.safe_dump(data)
        )
        invalid = await nps(cli, "config", "check", "--installed", key)
        assert invalid.exit_code == 1, invalid.output
        assert isinstance(invalid.exception, SystemExit)
        assert f"portal {key}'s stored configuration is invalid:" in invalid.stderr
    finally:
        await pool.execute("DELETE FROM portal_configs WHERE portal = $1", key)

    unknown = await nps(cli, "config", "check", "--installed", "nowhere.bitrix24.ru")
    assert unknown.exit_code == 2
    assert "no portal with that member id or domain" in unknown.stderr
    assert "Traceback" not in unknown.output
