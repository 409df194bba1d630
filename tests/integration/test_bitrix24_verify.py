"""`nps config check --portal` against the sandbox portal seeded from the example YAML."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from services.cli import app
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from shared.bitrix24.verify import PortalCategory, PortalCheck, check_configured_portal
from shared.portal_config import PortalConfig, parse_portal_config
from shared.settings import SANDBOX_SECRET, SANDBOX_USER_ID, Settings, get_settings
from tests.support.paths import EXAMPLE_CONFIG


def demo_portal() -> SandboxPortal:
    portal = SandboxPortal(user_id=SANDBOX_USER_ID, secret=SANDBOX_SECRET, limits=Limits.off())
    seed_demo(portal, EXAMPLE_CONFIG, contacts=5)
    return portal


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return data


def broken_example() -> dict[str, Any]:
    data = example()
    cosmetics, laser, cryo = data["survey"]["segments"]
    cosmetics["products"][0]["score_field"] = "UF_CRM_5_SERUM_TESTED"  # a boolean
    laser["score_field"] = "UF_CRM_5_NO_SUCH_FIELD"
    cryo["contact_fields"]["history"] = "UF_CRM_NPS_CRYO_B"  # a single double field
    return data


BROKEN_LINES = [
    "survey.segments[0].products[0].score_field: UF_CRM_5_SERUM_TESTED is a boolean field; "
    "expected a numeric (integer, double) or enumeration field",
    "survey.segments[1].score_field: UF_CRM_5_NO_SUCH_FIELD does not exist in crm.item.fields "
    "of smart process 1038",
    "survey.segments[2].contact_fields.history: UF_CRM_NPS_CRYO_B is a double field; expected a "
    "multiple string field",
]


def sandbox_settings(port: int = 8090) -> Settings:
    return Settings(bitrix24_webhook_url=None, sandbox_port=port, _env_file=None)


async def checked(config: PortalConfig, portal: SandboxPortal) -> PortalCheck:
    transport = httpx.ASGITransport(app=create_app(portal))
    return await check_configured_portal(sandbox_settings(), config, transport=transport)


async def check(config: PortalConfig, portal: SandboxPortal) -> list[str]:
    return (await checked(config, portal)).problems


async def test_the_example_config_fits_the_demo_portal(portal_config: PortalConfig) -> None:
    assert await check(portal_config, demo_portal()) == []


async def test_categories_no_segment_maps_are_listed(portal_config: PortalConfig) -> None:
    portal = demo_portal()
    etype = portal.crm.entity_type(portal_config.survey.entity_type_id)
    assert etype is not None
    added = portal.crm.add_category(etype, "Laser C")
    result = await checked(portal_config, portal)
    assert result.problems == []
    assert result.unmapped == [PortalCategory(added.id, "Laser C")]


async def test_every_misfit_is_one_line() -> None:
    config = parse_portal_config(broken_example())
    assert await check(config, demo_portal()) == BROKEN_LINES


async def test_the_deal_funnel_resolves_its_stages_from_the_portal(
    portal_config: PortalConfig,
) -> None:
    result = await checked(portal_config, demo_portal())
    assert [
        (f.category_id, f.success and f.success.id, f.failure and f.failure.id)
        for f in result.funnels
    ] == [(20, "C20:WON", "C20:LOSE")]


async def test_a_wrong_deal_category_or_field_is_reported() -> None:
    data = example()
    data["deal_surveys"][0]["category_id"] = 21
    data["deal_surveys"][0]["comment_field"] = "UF_CRM_NPS_NOTE"
    problems = await check(parse_portal_config(data), demo_portal())
    assert problems == [
        "deal_surveys[0].comment_field: UF_CRM_NPS_NOTE does not exist in the deal fields"
        " (crm.item.fields, entityTypeId 2)",
        "deal_surveys[0].category_id: deal category 21 does not exist (no stages)",
    ]


async def test_dispatch_sales_funnels_and_link_field_are_checked() -> None:
    data = example()
    data["dispatch"] = {
        "channel": "portal",
        "portal_channel": {"link_field": "UF_CRM_NO_LINK", "trigger": "NPS_SEND"},
        "sales": [
            {"funnel": 0, "survey": "After the sale"},
            {"funnel": 33, "survey": "After the sale"},
        ],
    }
    problems = await check(parse_portal_config(data), demo_portal())
    assert problems == [
        "dispatch.portal_channel.link_field: UF_CRM_NO_LINK does not exist in the deal fields"
        " (crm.item.fields, entityTypeId 2)",
        "dispatch.sales[1].funnel: deal category 33 does not exist (no stages)",
    ]


async def test_an_unknown_smart_process_is_reported() -> None:
    data = example()
    data["survey"]["entity_type_id"] = 4242
    problems = await check(parse_portal_config(data), demo_portal())
    assert len(problems) == 1
    assert problems[0].startswith(
        "survey.entity_type_id: cannot read the fields of smart process 4242 (NOT_FOUND:"
    )


async def test_a_wrong_webhook_is_one_clear_line(portal_config: PortalConfig) -> None:
    portal = demo_portal()
    portal.secret = "rotated"
    problems = await check(portal_config, portal)
    assert len(problems) == 1
    assert "NO_AUTH_FOUND" in problems[0]
    assert f"/rest/{SANDBOX_USER_ID}/{SANDBOX_SECRET}" not in problems[0]


# --- the command itself, against a sandbox listening on a real port --------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def sandbox_port() -> Iterator[int]:
    """The demo portal served by uvicorn in a thread (the CLI runs its own event loop)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(demo_portal()), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the sandbox server did not start"
        assert time.monotonic() < deadline, "the sandbox server did not start in 10 s"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def cli_env(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.chdir(EXAMPLE_CONFIG.parent.parent)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_config_check_portal_passes_on_the_demo_portal(
    sandbox_port: int, cli_env: pytest.MonkeyPatch
) -> None:
    cli_env.setenv("SANDBOX_PORT", str(sandbox_port))
    result = CliRunner().invoke(app, ["config", "check", str(EXAMPLE_CONFIG), "--portal"])
    assert result.exit_code == 0, result.output
    assert "portal: every configured field exists and its type fits" in result.output


def test_config_check_portal_shows_the_served_portal_and_how_to_pin_it(
    sandbox_port: int, cli_env: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    cli_env.setenv("SANDBOX_PORT", str(sandbox_port))

    async def learn(member_id: str | None) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("DELETE FROM ingest_portal")
            if member_id is not None:
                await conn.execute(
                    "INSERT INTO ingest_portal (member_id, domain) VALUES ($1, 'x.bitrix24.com')",
                    member_id,
                )
        finally:
            await conn.close()

    def served_line(config: Path) -> str:
        result = CliRunner().invoke(app, ["config", "check", str(config), "--portal"])
        assert result.exit_code == 0, result.output
        [line] = [line for line in result.output.splitlines() if line.startswith("served portal")]
        return line

    pinned = tmp_path / "portal.yaml"
    pinned.write_text(yaml.safe_dump({**example(), "portal": {"member_id": "p1n"}}))
    try:
        asyncio.run(learn(None))
        unknown = served_line(EXAMPLE_CONFIG)
        asyncio.run(learn("a1b2"))
        learned = served_line(EXAMPLE_CONFIG)
        pin = served_line(pinned)
    finally:
        asyncio.run(learn(None))
    assert unknown.startswith("served portal: not known yet")
    assert f"set portal.member_id in {EXAMPLE_CONFIG}" in unknown
    assert learned.startswith("served portal: a1b2 (x.bitrix24.com), learned from its first event")
    assert learned.endswith(f"To pin it, set portal.member_id: a1b2 in {EXAMPLE_CONFIG}")
    assert pin.startswith(f"served portal: p1n, pinned by portal.member_id in {pinned};")


def test_config_check_portal_prints_each_problem_and_fails(
    sandbox_port: int, cli_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli_env.setenv("SANDBOX_PORT", str(sandbox_port))
    broken = tmp_path / "portal.yaml"
    broken.write_text(yaml.safe_dump(broken_example()), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", str(broken), "--portal"])
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line] == BROKEN_LINES


def test_config_check_portal_says_when_the_sandbox_is_not_running(
    cli_env: pytest.MonkeyPatch,
) -> None:
    cli_env.setenv("SANDBOX_PORT", str(free_port()))
    result = CliRunner().invoke(app, ["config", "check", str(EXAMPLE_CONFIG), "--portal"])
    assert result.exit_code == 1
    assert "cannot read the field lists" in result.stderr
    assert "is the sandbox running?" in result.stderr
    assert f"/rest/{SANDBOX_USER_ID}/{SANDBOX_SECRET}" not in result.output


def test_config_check_without_a_portal_only_validates_the_yaml(
    cli_env: pytest.MonkeyPatch,
) -> None:
    cli_env.setenv("SANDBOX_PORT", str(free_port()))
    result = CliRunner().invoke(app, ["config", "check", str(EXAMPLE_CONFIG)])
    assert result.exit_code == 0, result.output
    assert "portal:" not in result.output


def test_config_check_portal_lists_categories_no_segment_maps(
    sandbox_port: int, cli_env: pytest.MonkeyPatch
) -> None:
    cli_env.setenv("SANDBOX_PORT", str(sandbox_port))
    created = httpx.post(
        f"http://127.0.0.1:{sandbox_port}/rest/{SANDBOX_USER_ID}/{SANDBOX_SECRET}/crm.category.add",
        json={"entityTypeId": 1038, "fields": {"name": "Laser C"}},
    )
    category = created.json()["result"]["category"]
    result = CliRunner().invoke(app, ["config", "check", str(EXAMPLE_CONFIG), "--portal"])
    assert result.exit_code == 0, result.output
    assert f"categories no segment maps: {category['id']} (Laser C)" in result.output
