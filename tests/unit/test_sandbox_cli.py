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
from services.sandbox.main import (
    HideWebhookSecret,
    banner,
    build_portal,
    build_sandbox,
    seed_config,
)
from services.sandbox.oauth import OAuthSettings
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portals import named_member_id
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
            "portals": [],
            "app": None,
            "oauth": OAuthSettings(),
            "public_url": None,
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
        "ONCRMLEADUPDATE",
        "ONTASKUPDATE",
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


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/rest/1/s3cret/crm.item.add", "/rest/1/***/crm.item.add"),
        ("/p/alpha/rest/1/s3cret/user.get", "/p/alpha/rest/1/***/user.get"),
        ("/p/alpha/rest/profile?auth=t0k3n&x=1", "/p/alpha/rest/profile?auth=***&x=1"),
        (
            "/oauth/token/?grant_type=refresh_token&client_id=c&client_secret=s&refresh_token=r",
            "/oauth/token/?grant_type=refresh_token&client_id=c&client_secret=***"
            "&refresh_token=***",
        ),
        (
            "/oauth/token/?code=abc&grant_type=authorization_code",
            "/oauth/token/?code=***&grant_type=authorization_code",
        ),
        ("/rest/app.info?access_token=t", "/rest/app.info?access_token=***"),
    ],
)
def test_access_log_hides_credentials(path: str, logged: str) -> None:
    args = ("127.0.0.1", "POST", path)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s"', args, None)
    assert HideWebhookSecret().filter(record)
    assert record.getMessage() == f'127.0.0.1 - "POST {logged}"'


def test_portals_and_the_application_are_options_and_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, calls = invoke(
        monkeypatch,
        "--portal", "alpha", "--portal", "beta,gamma", "--app", "local.x:s3cr3t",
        "--app-install-url", "http://127.0.0.1:8000/app/install",
        "--app-handler-url", "http://127.0.0.1:8000/app/frame",
        "--app-scope", "crm,bizproc", "--access-ttl", "2", "--public-url", "http://sb.test:1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [call] = calls
    assert call["portals"] == ["alpha", "beta", "gamma"]
    assert call["app"] == AppRegistration(
        client_id="local.x",
        client_secret="s3cr3t",
        install_url="http://127.0.0.1:8000/app/install",
        handler_url="http://127.0.0.1:8000/app/frame",
        scope=["crm", "bizproc"],
    )
    assert (call["oauth"].access_ttl_s, call["public_url"]) == (2.0, "http://sb.test:1")
    monkeypatch.setenv("SANDBOX_APP", "local.y:other")
    monkeypatch.setenv("SANDBOX_APP_CALLBACK_URL", "https://nps.example.com/app/events")
    monkeypatch.setenv("SANDBOX_PORTALS", "alpha beta")
    result, calls = invoke(monkeypatch)
    assert result.exit_code == 0, result.output
    assert calls[0]["portals"] == ["alpha", "beta"]
    assert calls[0]["app"].callback_url == "https://nps.example.com/app/events"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--portal", "Alpha"], "'Alpha': expected a lower-case letter"),
        (["--portal", "a", "--portal", "a"], "'a' given twice"),
        (["--app", "no-secret"], "expected CLIENT_ID:CLIENT_SECRET"),
        (["--app-handler-url", "http://x.test/app"], "--app-handler-url need --app"),
        (["--app", "c:s", "--app-install-url", "ftp://x.test/i"], "expected an http(s) URL"),
    ],
)
def test_bad_portal_and_application_options_are_named(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    result, calls = invoke(monkeypatch, *args)
    assert (result.exit_code, calls) == (2, [])
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_named_portals_are_seeded_like_the_default_and_listed_in_the_banner(
    tmp_path: Path,
) -> None:
    portal = build_portal(seed=str(CONFIG))
    registration = AppRegistration(client_id="local.x", client_secret="s3cr3t")
    sandbox = build_sandbox(
        portal,
        seed=str(CONFIG),
        portals=["alpha"],
        state_file=tmp_path / "s.json",
        registration=registration,
        public_url="http://127.0.0.1:8090",
    )
    alpha = sandbox.named["alpha"]
    assert alpha.portal.member_id == named_member_id("alpha")
    assert alpha.portal.state.survey is not None
    assert alpha.state_file == tmp_path / "s.alpha.json"
    text = banner(portal, "127.0.0.1", 8090, sandbox=sandbox)
    assert "portal alpha: http://127.0.0.1:8090/p/alpha/" in text
    assert "install the application: http://127.0.0.1:8090/p/alpha/install" in text
    assert "application local.x: OAuth server http://127.0.0.1:8090/oauth/token/" in text
    assert "s3cr3t" not in text


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
