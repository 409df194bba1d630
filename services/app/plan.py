"""What `nps run all` (`make run-app`) starts in application mode (`NPS_MODE=app`, docs/app.md):
the application (`nps run app`), then ingest, scoring, the router and crm_sync serving the
installed portals. Without `BITRIX24_CLIENT_ID` (no application registered on a real Bitrix24)
the sandbox comes first, with two portals (`alpha`, `beta`, seeded like the demo) on which the
application is registered, playing the OAuth server too; each process is given the sandbox's
application credentials. Then dispatch, the survey page and the reports app (`also`, built by
the CLI), whose `/frame` is the application's page (its handler URL): opening the application on
a portal opens that portal's dashboard.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.app.settings import AppSettings
from services.pipeline import pipeline_processes, sandbox_process
from shared.settings import Settings
from shared.supervisor import Listener, Process

SANDBOX_PORTALS = ("alpha", "beta")
SANDBOX_CLIENT_ID = "local.nps.sandbox"
SANDBOX_CLIENT_SECRET = "sandbox-app-secret"  # noqa: S105 - not a secret: the sandbox's own app


@dataclass(frozen=True)
class AppPlan:
    processes: list[Process]
    running: list[str]
    """What to say once everything runs: where to install the application."""


def app_plan(
    settings: Settings, app: AppSettings, frame_url: str, also: Sequence[Process] = ()
) -> AppPlan:
    """The processes of application mode, in start order (module docstring). `frame_url`: the
    reports app's `/frame`, the application's page; `also`: the processes started after the
    pipeline's, each told it runs in application mode too."""
    base = [sys.executable, "-m", "services.cli"]
    sandbox = settings.bitrix24_client_id is None
    sandbox_url = f"http://{settings.sandbox_host}:{settings.sandbox_port}"
    env = {"NPS_MODE": "app"}
    if sandbox:
        env |= {
            "BITRIX24_OAUTH_URL": sandbox_url,
            "BITRIX24_CLIENT_ID": SANDBOX_CLIENT_ID,
            "BITRIX24_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
            "APP_BX24_JS_URL": f"{sandbox_url}/sandbox/bx24.js",
        }
    processes: list[Process] = []
    if sandbox:
        processes.append(_sandbox(settings, app, base, sandbox_url, frame_url))
    frame = {} if app.frame_url is not None else {"APP_FRAME_URL": frame_url}
    processes.append(
        Process(
            "app",
            [*base, "run", "app"],
            env | frame,
            f"{app.base_url()}/app/install",
            Listener(app.host, app.port, "APP_PORT"),
            ready=f"http://{_local(app.host)}:{app.port}/healthz",
        )
    )
    processes.extend(pipeline_processes(settings, base, env))
    processes.extend(replace(process, env={**env, **process.env}) for process in also)
    return AppPlan(processes, _running(sandbox, sandbox_url, app, frame_url))


def _sandbox(
    settings: Settings, app: AppSettings, base: list[str], url: str, frame_url: str
) -> Process:
    portals = [arg for name in SANDBOX_PORTALS for arg in ("--portal", name)]
    options = [
        *portals,
        "--app",
        f"{SANDBOX_CLIENT_ID}:{SANDBOX_CLIENT_SECRET}",
        "--app-install-url",
        f"{app.base_url()}/app/install",
        "--app-callback-url",
        app.events_url(),
        "--app-handler-url",
        frame_url,
    ]
    return sandbox_process(settings, base, options, f"{url}/sandbox/portals")


def _running(sandbox: bool, url: str, app: AppSettings, frame_url: str) -> list[str]:
    if not sandbox:
        return [
            "  portals   the portals the application is installed on (NPS_MODE=app)",
            f"  install   register the application with {app.base_url()}/app/install"
            f" and the handler path {frame_url} (docs/app.md), then open it on the portal",
        ]
    return [
        "  portals   the sandbox's portals where the application is installed (NPS_MODE=app)",
        "  install   open each portal's install page (as its administrator):",
        *(f"              {name}: {url}/p/{name}/install" for name in SANDBOX_PORTALS),
        "  open      then the application's page there (its NPS dashboard):",
        *(f"              {name}: {url}/p/{name}/app" for name in SANDBOX_PORTALS),
    ]


def _local(host: str) -> str:
    """Where a local process reaches a listener on `host`."""
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104
