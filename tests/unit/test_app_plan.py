"""What `nps run all` starts in application mode (`services/app/plan.py`): the sandbox with two
portals and the application registered when no real application is configured, then the
application and the pipeline services, each told it runs in application mode."""

from __future__ import annotations

from pydantic import SecretStr

from services.app.plan import SANDBOX_CLIENT_ID, app_plan
from services.app.settings import AppSettings
from shared.settings import Settings
from shared.supervisor import Listener, Process

FRAME = "http://127.0.0.1:8001/frame"
DASHBOARD = Process("reports", ["nps", "run", "reports"], {"X": "1"}, FRAME, Listener("h", 1, "P"))


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, nps_mode="app", **values)  # type: ignore[arg-type]


def test_with_the_sandbox_two_portals_install_the_application() -> None:
    app = AppSettings(_env_file=None)
    plan = app_plan(settings(), app, FRAME, [DASHBOARD])
    names = [process.name for process in plan.processes]
    assert names == ["sandbox", "app", "ingest", "scoring", "router", "crm_sync", "reports"]
    sandbox = plan.processes[0]
    args = sandbox.args[sandbox.args.index("sandbox") :]
    assert args.count("--portal") == 2
    assert args[args.index("--app") + 1].startswith(f"{SANDBOX_CLIENT_ID}:")
    assert args[args.index("--app-install-url") + 1] == "http://127.0.0.1:8003/app/install"
    assert args[args.index("--app-callback-url") + 1] == "http://127.0.0.1:8003/app/events"
    assert args[args.index("--app-handler-url") + 1] == FRAME
    assert plan.processes[-1].env["X"] == "1"
    assert plan.processes[1].env["APP_FRAME_URL"] == FRAME  # the tabs it binds
    for process in plan.processes[1:]:
        assert process.env["NPS_MODE"] == "app"
        assert process.env["BITRIX24_OAUTH_URL"] == "http://127.0.0.1:8090"
        assert process.env["BITRIX24_CLIENT_ID"] == SANDBOX_CLIENT_ID
    assert "http://127.0.0.1:8090/p/alpha/install" in "\n".join(plan.running)
    assert "http://127.0.0.1:8090/p/beta/install" in "\n".join(plan.running)
    assert "http://127.0.0.1:8090/p/alpha/app" in "\n".join(plan.running)
    assert "http://127.0.0.1:8090/p/beta/app" in "\n".join(plan.running)


def test_with_a_registered_application_no_sandbox_and_its_own_credentials() -> None:
    configured = settings(
        bitrix24_client_id="local.abc", bitrix24_client_secret=SecretStr("s3cret")
    )
    public = AppSettings(_env_file=None, public_url="https://nps.example.com")
    plan = app_plan(configured, public, FRAME, [DASHBOARD])
    names = [p.name for p in plan.processes]
    assert names == ["app", "ingest", "scoring", "router", "crm_sync", "reports"]
    for process in plan.processes:
        assert process.env["NPS_MODE"] == "app"
        assert "BITRIX24_CLIENT_ID" not in process.env  # the deployment's own, inherited
    assert "https://nps.example.com/app/install" in "\n".join(plan.running)
    assert FRAME in "\n".join(plan.running)
