"""`nps survey link` against the real PostgreSQL: the request stored, the link verifiable; for a
deal survey the deal read from the sandbox portal over HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import uvicorn
from typer.testing import CliRunner

from services.cli import app
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import open_nps_deals, seed_demo
from services.survey.requests import SurveyRequest
from services.survey.settings import DEMO_KEY
from services.survey.store import get_request
from services.survey.tokens import LinkSigner
from shared.settings import SANDBOX_SECRET, get_settings
from tests.support.crm_sync import CONFIG_PATH


@pytest.fixture
def cli(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "")
    monkeypatch.setenv("NPS_CONFIG", "config/portal.example.yaml")
    monkeypatch.setenv("SURVEY_PUBLIC_URL", "https://nps.example.com/")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


async def _stored(dsn: str, request_id: uuid.UUID) -> SurveyRequest | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await get_request(conn, request_id)
    finally:
        await conn.close()


def test_link_stores_the_request_and_prints_a_verifiable_link(cli: CliRunner, pg_dsn: str) -> None:
    result = cli.invoke(app, ["survey", "link", "--contact", "42", "--segment", "12"])
    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith("https://nps.example.com/s/")
    check = LinkSigner([DEMO_KEY], 86400).check(link.rsplit("/", 1)[1])
    assert check.status == "valid"
    assert check.request_id is not None
    request = asyncio.run(_stored(pg_dsn, check.request_id))
    assert request is not None
    assert (request.contact_id, request.category_id, request.sku, request.lang) == (
        42,
        12,
        "EQ-LASER-A",
        "ru",
    )


async def _learn(dsn: str, member_id: str | None) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM ingest_portal")
        if member_id is not None:
            await conn.execute(
                "INSERT INTO ingest_portal (member_id, domain) VALUES ($1, 'p.bitrix24.ru')",
                member_id,
            )
    finally:
        await conn.close()


@pytest.mark.parametrize("learned", ["m-learned-portal", None], ids=["learned", "not-yet"])
def test_link_is_for_the_portal_the_deployment_serves(
    cli: CliRunner, pg_dsn: str, learned: str | None
) -> None:
    asyncio.run(_learn(pg_dsn, learned))
    try:
        result = cli.invoke(app, ["survey", "link", "--contact", "42", "--segment", "12"])
    finally:
        asyncio.run(_learn(pg_dsn, None))
    assert result.exit_code == 0, result.output
    check = LinkSigner([DEMO_KEY], 86400).check(result.stdout.strip().rsplit("/", 1)[1])
    assert check.request_id is not None
    request = asyncio.run(_stored(pg_dsn, check.request_id))
    assert request is not None
    assert request.portal == (learned or "default")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--contact", "42", "--segment", "nope"], 2, "segment 'nope' is not in survey.segments"),
        (["--contact", "42", "--segment", "10", "--product", "X"], 2, "cosmetics segment"),
        (["--contact", "42", "--segment", "12", "--lang", "fr"], 2, "language 'fr'"),
    ],
)
def test_link_names_a_bad_option(cli: CliRunner, args: list[str], code: int, message: str) -> None:
    result = cli.invoke(app, ["survey", "link", *args])
    assert result.exit_code == code
    assert message in result.stderr


def test_link_refuses_without_keys_for_a_real_portal(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://example.bitrix24.ru/rest/1/secret/")
    monkeypatch.delenv("SURVEY_KEYS", raising=False)
    get_settings.cache_clear()
    result = cli.invoke(app, ["survey", "link", "--contact", "42", "--segment", "12"])
    assert result.exit_code == 1
    assert "SURVEY_KEYS is not set" in result.stderr


def _request_of(link: str, dsn: str) -> SurveyRequest:
    check = LinkSigner([DEMO_KEY], 86400).check(link.strip().rsplit("/", 1)[1])
    assert check.request_id is not None
    request = asyncio.run(_stored(dsn, check.request_id))
    assert request is not None
    return request


@pytest.fixture
def sandbox(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPortal]:
    """The demo sandbox portal served over HTTP from a thread, as `make run` has it."""
    portal = SandboxPortal(secret=SANDBOX_SECRET, limits=Limits.off())
    seed_demo(portal, config_path=CONFIG_PATH, contacts=10, seed=42)
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
    monkeypatch.setenv("SANDBOX_PORT", str(port))
    get_settings.cache_clear()
    try:
        yield portal
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_deal_link_without_the_portal_when_survey_and_contact_are_given(
    cli: CliRunner, pg_dsn: str
) -> None:
    args = ["--deal", "77", "--survey", "after the sale", "--contact", "42", "--lang", "en"]
    result = cli.invoke(app, ["survey", "link", *args])
    assert result.exit_code == 0, result.output
    request = _request_of(result.stdout, pg_dsn)
    assert (request.deal_id, request.category_id, request.sku, request.contact_id) == (
        77,
        20,
        "DEAL-SALES",
        42,
    )


def test_a_deal_links_survey_and_contact_come_from_the_deal(
    cli: CliRunner, pg_dsn: str, sandbox: SandboxPortal
) -> None:
    (deal_id,) = open_nps_deals(sandbox, 1, seed=3)
    deal = sandbox.crm.records(2)[deal_id]
    result = cli.invoke(app, ["survey", "link", "--deal", str(deal_id)])
    assert result.exit_code == 0, result.output
    request = _request_of(result.stdout, pg_dsn)
    assert (request.deal_id, request.category_id, request.contact_id) == (
        deal_id,
        20,
        deal["CONTACT_ID"],
    )


def test_a_deal_of_no_deal_survey_or_none_at_all_is_named(
    cli: CliRunner, sandbox: SandboxPortal
) -> None:
    (nps_deal,) = open_nps_deals(sandbox, 1, seed=4)
    sale = int(sandbox.crm.records(2)[nps_deal]["UF_CRM_NPS_SALE_DEAL"])
    result = cli.invoke(app, ["survey", "link", "--deal", str(sale)])
    assert result.exit_code == 2
    assert f"deal {sale} is in deal category 0, which is no deal survey's" in result.stderr
    assert "known: 20 (After the sale)" in result.stderr
    result = cli.invoke(app, ["survey", "link", "--deal", "999999", "--contact", "5"])
    assert result.exit_code == 2
    assert "deal 999999 is not in the portal" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--contact", "42"], "give either --segment"),
        (["--segment", "12", "--deal", "7", "--contact", "42"], "give either --segment"),
        (["--segment", "12"], "--segment needs --contact"),
        (["--segment", "12", "--contact", "42", "--survey", "x"], "--survey names a deal survey"),
        (["--deal", "7", "--product", "X", "--contact", "42"], "--product belongs to --segment"),
        (["--deal", "7", "--survey", "nope", "--contact", "42"], "deal survey 'nope' is not in"),
        (["--deal", "0", "--survey", "20", "--contact", "42"], "deal 0 is not a deal id"),
    ],
)
def test_link_names_options_that_do_not_fit(cli: CliRunner, args: list[str], message: str) -> None:
    result = cli.invoke(app, ["survey", "link", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_portal_that_cannot_be_reached_is_named_not_a_traceback(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("SANDBOX_PORT", str(closed))
    get_settings.cache_clear()
    result = cli.invoke(app, ["survey", "link", "--deal", "5"])
    assert result.exit_code == 1
    assert "cannot read deal 5 from the portal: crm.item.get" in result.stderr
