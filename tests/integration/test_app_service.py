"""The application service as it runs (`serve_app`, what `nps run app` starts): over real HTTP,
a sandbox portal installs it and uninstalls it; and `nps run app` without the application's
credentials says so in one line."""

import os
import subprocess
import sys
import uuid

import asyncpg
import httpx
from pydantic import SecretStr

from services.harness.stack import free_port
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox
from shared.settings import Settings
from tests.support import serving
from tests.support.app import app_registration, app_service, until_row
from tests.support.paths import ROOT

CLIENT_ID = "local.nps.7"
SECRET = "service-secret"


async def test_a_portal_installs_and_uninstalls_the_running_service(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    name = f"gamma-{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox(
        SandboxPortal(limits=Limits.off()),
        registration=app_registration(CLIENT_ID, SECRET, app=app_url),
    )
    sandbox.add(PortalSpec(name=name, limits=Limits.off()))
    member_id = sandbox.named[name].portal.member_id
    async with serving(create_sandbox_app(sandbox)) as portal_url:
        assert sandbox.server is not None
        sandbox.server.base_url = portal_url
        configured = settings.model_copy(
            update={
                "bitrix24_oauth_url": portal_url,
                "bitrix24_client_id": CLIENT_ID,
                "bitrix24_client_secret": SecretStr(SECRET),
            }
        )
        async with (
            app_service(configured, port, portal_url),
            httpx.AsyncClient(base_url=portal_url, timeout=30) as http,
        ):
            installed = await http.post(f"/p/{name}/sandbox/install", json={})
            assert installed.json()["install_page"]["calls_install_finish"] is True
            token = sandbox.named[name].portal.state.app.application_token
            await until_row(pool, member_id, "application_token", token)
            bindings = (await http.get(f"/p/{name}/sandbox/app")).json()["bindings"]
            assert {b["event"] for b in bindings} >= {"ONCRMDEALADD", "ONAPPUNINSTALL"}
            assert (await http.post(f"/p/{name}/sandbox/uninstall")).status_code == 200
            await until_row(pool, member_id, "status", "uninstalled")


def test_nps_run_app_names_the_missing_credentials() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX24_", "APP_"))}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "run", "app"],
        cwd=ROOT,
        env={**environ, "LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert "BITRIX24_CLIENT_ID and BITRIX24_CLIENT_SECRET not set" in output
