"""The application service as it runs (`serve_app`, what `nps run app` starts): over real HTTP,
a sandbox portal installs it and uninstalls it; and `nps run app` without the application's
credentials says so in one line."""

import asyncio
import os
import socket
import subprocess
import sys
import uuid

import asyncpg
import httpx
from pydantic import SecretStr

from services.app.main import serve_app
from services.app.settings import AppSettings
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox
from shared.settings import Settings
from tests.support import serving
from tests.support.paths import ROOT

CLIENT_ID = "local.nps.7"
SECRET = "service-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for(url: str) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(30):
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def until(pool: asyncpg.Pool, member_id: str, column: str, value: object) -> None:
    """Wait until the portal's row holds `value` in `column` (a column name of this test's)."""
    sql = f"SELECT {column} FROM bitrix24_app_portals WHERE member_id = $1"
    async with asyncio.timeout(10):
        while await pool.fetchval(sql, member_id) != value:
            await asyncio.sleep(0.05)


async def test_a_portal_installs_and_uninstalls_the_running_service(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    name = f"gamma-{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox(
        SandboxPortal(limits=Limits.off()),
        registration=AppRegistration(
            client_id=CLIENT_ID,
            client_secret=SECRET,
            install_url=f"{app_url}/app/install",
            callback_url=f"{app_url}/app/events",
        ),
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
        app_settings = AppSettings(
            port=port,
            ingest_webhook_url="http://127.0.0.1:9/webhooks/bitrix24",
            bx24_js_url=f"{portal_url}/sandbox/bx24.js",
            _env_file=None,
        )
        stop = asyncio.Event()
        service = asyncio.create_task(serve_app(configured, stop, app_settings))
        try:
            await wait_for(f"{app_url}/healthz")
            async with httpx.AsyncClient(base_url=portal_url, timeout=30) as http:
                installed = await http.post(f"/p/{name}/sandbox/install", json={})
                assert installed.json()["install_page"]["calls_install_finish"] is True
                token = sandbox.named[name].portal.state.app.application_token
                await until(pool, member_id, "application_token", token)
                bindings = (await http.get(f"/p/{name}/sandbox/app")).json()["bindings"]
                assert {b["event"] for b in bindings} >= {"ONCRMDEALADD", "ONAPPUNINSTALL"}
                assert (await http.post(f"/p/{name}/sandbox/uninstall")).status_code == 200
                await until(pool, member_id, "status", "uninstalled")
        finally:
            stop.set()
            await service


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
