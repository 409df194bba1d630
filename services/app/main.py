"""The application process (`nps run app`): the install, event and robot endpoints (uvicorn on
APP_HOST:APP_PORT) and the periodic re-bind of every installed portal (`APP_REBIND_S`),
stopped by SIGTERM/SIGINT (docs/app.md)."""

from __future__ import annotations

import asyncio

from services.app.installer import Installer
from services.app.lifecycle import wanted_bindings, wanted_placements
from services.app.rebind import run_rebind
from services.app.robot import PortalSmartProcess, RobotDoor, Robots
from services.app.settings import AppSettings
from services.app.web import create_app
from shared.bitrix24 import Bitrix24Client, app_client
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.health import serve_http
from shared.service import Runtime, run_loop, serve
from shared.settings import Settings


def run(settings: Settings) -> None:
    """Blocking entry point of `nps run app`."""
    run_loop(serve_app(settings))


async def serve_app(
    settings: Settings, stop: asyncio.Event | None = None, app: AppSettings | None = None
) -> None:
    """Run the application's endpoints until `stop` is set or a signal arrives."""
    app = app or AppSettings()
    credentials = AppCredentials.from_settings(settings)

    async def wire(runtime: Runtime) -> None:
        oauth = OAuthServer(credentials)
        book = TokenBook(runtime.pool, oauth)

        def client_for(member_id: str) -> Bitrix24Client:
            return app_client(runtime.pool, book, member_id, runtime.configs.get(member_id))

        # Each portal's robot on its own NPS smart process (its stored configuration's), the
        # portal YAML (the one configuration this process was given) for one without.
        template = runtime.configs.only()
        robots = Robots(app.robot_url(), PortalSmartProcess(runtime.pool, template))
        installer = Installer(
            book,
            credentials.client_id,
            client_for,
            wanted_bindings(
                app.ingest_url(settings), app.events_url(), offline=settings.ingest_offline
            ),
            robots=robots,
            placements=wanted_placements(app.frame_url),
        )
        door = RobotDoor(book, runtime.pool, runtime.outbox)
        web = create_app(installer, app.bx24_js_url, door)

        async def http(stop: asyncio.Event) -> None:
            """The endpoints and the periodic re-bind, the OAuth server's client closed once
            both ended."""
            try:
                async with asyncio.TaskGroup() as jobs:
                    jobs.create_task(serve_http(web, app.host, app.port, stop))
                    jobs.create_task(run_rebind(installer, app.rebind_s, stop))
            finally:
                await oauth.aclose()

        runtime.background.append(http)

    # The application installs portals before anything serves them: its few calls (event.bind)
    # go with the portal YAML's limits, in application mode too (no registry of its own).
    await serve("app", settings.model_copy(update={"nps_mode": "webhook"}), wire, stop=stop)
