"""`nps report` against the real PostgreSQL: JSON rows, the table, and errors naming the option."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from typer.testing import CliRunner

from services.cli import app
from services.scoring.handlers import score_submission
from shared.outbox import Outbox
from shared.settings import get_settings
from tests.support.cosmetics import LEFT_OUT, score_the_check
from tests.support.scoring import make_submission


@pytest.fixture(scope="module")
async def portal(pool: asyncpg.Pool) -> str:
    member = f"m-cli-{uuid.uuid4().hex[:10]}"
    answers = [(5, "2024-05-02T10:00:00+03:00", 10), (7, "2024-08-20T10:00:00+03:00", 2)]
    for item, (manager, at, score) in enumerate(answers, 1):
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("EQ-LASER-A", score),
                item_id=item,
                member_id=member,
                responsible_id=manager,
                submitted_at=at,
                kind="equipment",
                category_id=12,
                segment="Laser A",
            ),
        )
    return member


@pytest.fixture
def cli(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
async def named(pool: asyncpg.Pool, portal: str) -> str:
    """The portal, with the name ingest read for manager 5 (none for 7)."""
    await pool.execute(
        "INSERT INTO ingest_users (portal, user_id, name, refreshed_at) VALUES ($1, 5, $2, now())"
        " ON CONFLICT DO NOTHING",
        portal,
        "Anna Petrova",
    )
    return portal


def test_json_rows_by_manager(cli: CliRunner, named: str) -> None:
    result = cli.invoke(app, ["report", "--by", "manager", "--portal", named, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "manager_id": 5,
            "manager_name": "Anna Petrova",
            "nps": 100.0,
            "margin": 0.0,
            "few_answers": True,
            "promoters": 1,
            "passives": 0,
            "detractors": 0,
            "answers": 1,
            "avg_score": 10.0,
            "note": None,
        },
        {
            "manager_id": 7,
            "manager_name": None,
            "nps": -100.0,
            "margin": 0.0,
            "few_answers": True,
            "promoters": 0,
            "passives": 0,
            "detractors": 1,
            "answers": 1,
            "avg_score": 2.0,
            "note": None,
        },
    ]


def test_managers_are_named_in_the_table(cli: CliRunner, named: str) -> None:
    result = cli.invoke(app, ["report", "--by", "manager", "--portal", named])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["manager_id", "manager_name", "nps"]
    assert lines[2].split()[:4] == ["5", "Anna", "Petrova", "100.0*"]
    assert lines[3].split()[:3] == ["7", "-", "-100.0*"]


def test_threshold_of_too_few_answers_is_configured(
    cli: CliRunner, portal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NPS_MIN_ANSWERS", "1")
    get_settings.cache_clear()
    result = cli.invoke(app, ["report", "--by", "manager", "--portal", portal, "--json"])
    assert result.exit_code == 0, result.output
    assert [row["few_answers"] for row in json.loads(result.stdout)] == [False, False]


def test_quarterly_trend_as_a_table(cli: CliRunner, portal: str) -> None:
    result = cli.invoke(
        app,
        ["report", "--by", "period", "--period", "quarter", "--portal", portal, "--segment", "12"],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "period",
        "nps",
        "margin",
        "promoters",
        "passives",
        "detractors",
        "answers",
        "avg_score",
    ]
    assert [line.split() for line in lines[2:]] == [
        ["2024-Q2", "100.0*", "±0.0", "1", "0", "0", "1", "10.0"],
        ["2024-Q3", "-100.0*", "±0.0", "0", "0", "1", "1", "2.0"],
        ["*", "fewer", "than", "30", "answers:", "too", "few", "to", "rely", "on"],
    ]


def test_custom_range(cli: CliRunner, portal: str) -> None:
    bounds = ["--from", "2024-05-01", "--to", "2024-05-31"]
    result = cli.invoke(app, ["report", "--by", "period", *bounds, "--portal", portal, "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["period"], row["nps"], row["answers"]) == ("2024-05-01..2024-05-31", 100.0, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2024-06-01", "--to", "2024-05-01"], "from (2024-06-01) is after to"),
        (["--by", "colour"], "by: Input should be 'product', 'segment', 'manager' or 'period'"),
        (["--period", "fortnight"], "period: Input should be"),
        (["--from", "01.05.2024"], "01.05.2024"),
    ],
)
def test_bad_options_are_named(cli: CliRunner, args: list[str], message: str) -> None:
    result = cli.invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


@pytest.fixture(scope="module")
async def check_portal(pool: asyncpg.Pool) -> str:
    member = f"m-cli-check-{uuid.uuid4().hex[:10]}"
    await score_the_check(pool, member)
    return member


@pytest.mark.parametrize("by", ["period", "manager"])
def test_the_cosmetics_check_shows_no_aggregate_nps(
    cli: CliRunner, check_portal: str, by: str
) -> None:
    args = ["report", "--by", by, "--period", "range", "--portal", check_portal]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    header, _, row = result.stdout.splitlines()
    assert header.split()[-3:] == ["answers", "avg_score", "note"]
    assert row.endswith(LEFT_OUT)
    assert row.removesuffix(LEFT_OUT).split()[-6:] == ["-", "0", "0", "0", "0", "-"]
    assert "60.0" not in result.stdout
