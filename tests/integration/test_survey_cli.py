"""`nps survey link` against the real PostgreSQL: the request stored, the link verifiable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from typer.testing import CliRunner

from services.cli import app
from services.survey.requests import SurveyRequest
from services.survey.settings import DEMO_KEY
from services.survey.store import get_request
from services.survey.tokens import LinkSigner
from shared.settings import get_settings


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
