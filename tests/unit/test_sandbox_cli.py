"""``nps sandbox`` options reach ``run`` and ``build_portal`` pairs secrets with the env."""

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from services.sandbox import commands
from services.sandbox.app import SalesClosing
from services.sandbox.limits import Limits
from services.sandbox.main import HideWebhookSecret, build_portal, seed_config
from services.sandbox.seed import DEMO_CONFIG

CONFIG = Path(__file__).parents[2] / "config" / "portal.example.yaml"


def test_sandbox_command_passes_its_options_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(commands, "run", lambda **kwargs: calls.append(kwargs))
    app = typer.Typer()
    app.command("version")(lambda: None)
    commands.register(app)
    result = CliRunner().invoke(
        app,
        [
            "sandbox", "--seed", "demo", "--port", "9001", "--handler", "http://a/hook",
            "--handler", "http://b/hook", "--state-file", "s.json", "--secret", "abc",
            "--app-token", "tok", "--no-limits",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "port": 9001,
            "host": "127.0.0.1",
            "seed": "demo",
            "handler": ["http://a/hook", "http://b/hook"],
            "state_file": Path("s.json"),
            "limits": Limits.off(),
            "secret": "abc",
            "app_token": "tok",
            "smtp_port": 8025,
            "closing": None,
        }
    ]


def invoke(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(commands, "run", lambda **kwargs: calls.append(kwargs))
    app = typer.Typer()
    app.command("version")(lambda: None)
    commands.register(app)
    return CliRunner().invoke(app, ["sandbox", *args]), calls


def test_the_inbox_and_the_sales_closer_are_options_and_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, calls = invoke(monkeypatch, "--no-inbox", "--close-sales", "3", "--every", "5")
    assert result.exit_code == 0, result.output
    assert (calls[0]["smtp_port"], calls[0]["closing"]) == (None, SalesClosing(3, 5.0))
    monkeypatch.setenv("SANDBOX_SMTP_PORT", "2525")
    monkeypatch.setenv("SANDBOX_CLOSE_SALES", "2")
    monkeypatch.setenv("SANDBOX_CLOSE_EVERY_S", "30")
    result, calls = invoke(monkeypatch)
    assert result.exit_code == 0, result.output
    assert (calls[0]["smtp_port"], calls[0]["closing"]) == (2525, SalesClosing(2, 30.0))
    monkeypatch.setenv("SANDBOX_SMTP_PORT", "mail")
    result, calls = invoke(monkeypatch)
    assert (result.exit_code, calls) == (2, [])
    assert "SANDBOX_SMTP_PORT" in result.output


def test_a_portal_yaml_the_demo_cannot_use_is_named_without_a_traceback(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "portal.yaml"
    broken.write_text(
        CONFIG.read_text(encoding="utf-8") + "dispatch:\n  products: {laser: EQ-LASER-A}\n",
        encoding="utf-8",
    )
    app = typer.Typer()
    app.command("version")(lambda: None)
    commands.register(app)
    result = CliRunner().invoke(app, ["sandbox", "--seed", str(broken)])
    assert result.exit_code == 2
    assert "'dispatch.products' key 'laser': expected a product id" in result.output
    assert "Traceback" not in result.output


def test_build_portal_takes_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_SECRET", "envsecret")
    monkeypatch.setenv("SANDBOX_APP_TOKEN", "envtoken")
    portal = build_portal(seed=str(CONFIG), handlers=["http://ingest/hook"])
    assert (portal.secret, portal.application_token) == ("envsecret", "envtoken")
    assert [h.event for h in portal.state.handlers] == [
        "ONCRMDYNAMICITEMADD",
        "ONCRMDYNAMICITEMUPDATE",
        "ONCRMDEALADD",
        "ONCRMDEALUPDATE",
    ]
    assert portal.state.survey is not None
    assert build_portal(secret="flag").secret == "flag"


def test_a_seeded_portal_is_the_same_portal_at_every_start() -> None:
    """Its member_id follows from the seed: `make run` again is the portal the database knows."""
    demo = build_portal(seed="demo").member_id
    assert build_portal(seed="demo").member_id == demo
    assert build_portal(seed=str(CONFIG)).member_id not in (demo, "")
    assert build_portal(seed=str(CONFIG)).member_id == build_portal(seed=str(CONFIG)).member_id
    assert re.fullmatch(r"[0-9a-f]{32}", demo)
    assert build_portal().member_id != build_portal().member_id


def test_access_log_hides_the_webhook_secret() -> None:
    args = ("127.0.0.1", "POST", "/rest/1/s3cret/crm.item.add")
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s"', args, None)
    assert HideWebhookSecret().filter(record)
    assert record.getMessage() == '127.0.0.1 - "POST /rest/1/***/crm.item.add"'


def test_demo_seed_follows_the_pipeline_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NPS_CONFIG", raising=False)
    assert seed_config("demo") == DEMO_CONFIG
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "portal.yaml").write_text("{}", encoding="utf-8")
    assert seed_config("demo") == Path("config/portal.yaml")
    monkeypatch.setenv("NPS_CONFIG", str(tmp_path / "mine.yaml"))
    assert seed_config("demo") == DEMO_CONFIG  # configured but missing
    (tmp_path / "mine.yaml").write_text("{}", encoding="utf-8")
    assert seed_config("demo") == tmp_path / "mine.yaml"
    assert seed_config("other.yaml") == Path("other.yaml")
