"""The pipeline as separate OS processes on free local ports: for the fault suite, the chaos
command and the pipeline benchmark. Each process can be killed (SIGKILL), stopped (SIGTERM) and
started again, the way a crash or a deploy would do it.

With `portals` (names), the stack runs in application mode (`NPS_MODE=app`, docs/app.md): the
sandbox serves those named portals under `/p/<name>/` with the application registered on them
(it plays the OAuth server), and the application (`nps run app`) starts before the pipeline.
Nothing is installed: `services.harness.portals` installs the application on each portal.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shared.settings import SANDBOX_APP_TOKEN, SANDBOX_SECRET, SANDBOX_USER_ID
from shared.supervisor import Listener, Process, Supervisor

PIPELINE: tuple[str, ...] = ("ingest", "scoring", "router", "crm_sync")
SURVEY = "survey"
"""The survey page: started on demand (`start("survey")`), not by `start_all`."""
DISPATCH = "dispatch"
"""Dispatch: started on demand (`start("dispatch")`), not by `start_all`; its e-mails go to the
sandbox's local inbox (`smtp` port)."""
APP = "app"
"""The application (install, events, robot): started by `start_all` in application mode only."""
CLIENT_ID = "local.nps.chaos"
CLIENT_SECRET = "chaos-app-secret"  # noqa: S105 - not a secret: the sandbox's own application


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """Sandbox portal + the four services, each its own process, on ports of their own, under
    the supervisor `nps run all` uses (`shared.supervisor`); with `portals`, application mode
    (module doc)."""

    database_url: str
    rabbitmq_url: str
    config: Path
    log_dir: Path
    sandbox_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    portals: tuple[str, ...] = ()
    """Named sandbox portals served in application mode (none: the webhook portal)."""
    ports: dict[str, int] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    supervisor: Supervisor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("sandbox", *PIPELINE, "ingest_health", SURVEY, DISPATCH, "smtp", APP):
            self.ports.setdefault(name, free_port())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor(environ={}, log_dir=self.log_dir)

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.supervisor.procs

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sandbox']}"

    @property
    def webhook_url(self) -> str:
        return f"{self.sandbox_url}/rest/{SANDBOX_USER_ID}/{SANDBOX_SECRET}/"

    @property
    def app_mode(self) -> bool:
        return bool(self.portals)

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[APP]}"

    def portal_url(self, name: str) -> str:
        """Where the named portal's paths start (its `/sandbox/…`, its webhook, its pages)."""
        return f"{self.sandbox_url}/p/{name}"

    @property
    def survey_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[SURVEY]}"

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingest']}"

    def env(self, name: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "RABBITMQ_URL": self.rabbitmq_url,
            "NPS_CONFIG": str(self.config),
            "SANDBOX_HOST": "127.0.0.1",
            "SANDBOX_PORT": str(self.ports["sandbox"]),
            "INGEST_HOST": "127.0.0.1",
            "INGEST_PORT": str(self.ports["ingest"]),
            "INGEST_HEALTH_PORT": str(self.ports["ingest_health"]),
            "HEALTH_HOST": "127.0.0.1",
            "SURVEY_HOST": "127.0.0.1",
            "SURVEY_PORT": str(self.ports[SURVEY]),
            "DISPATCH_SMTP_HOST": "127.0.0.1",
            "DISPATCH_SMTP_PORT": str(self.ports["smtp"]),
            "DISPATCH_SMTP_TLS": "none",
            "DISPATCH_TICK_S": "0.5",
            "LOG_FORMAT": "json",
            # a dozen processes on one server, beside whatever else uses it
            "DATABASE_POOL_MAX": "6",
            **self._app_env(),
            **self.extra_env,
        }
        env.pop("BITRIX24_WEBHOOK_URL", None)
        env.pop("BITRIX24_APP_TOKEN", None)
        if (name in PIPELINE and name != "ingest") or name == DISPATCH:
            env["HEALTH_PORT"] = str(self.ports[name])
        return env

    def _app_env(self) -> dict[str, str]:
        """Application mode's settings: the sandbox as the OAuth server, its application."""
        if not self.app_mode:
            return {"NPS_MODE": "webhook"}
        return {
            "NPS_MODE": "app",
            "BITRIX24_OAUTH_URL": self.sandbox_url,
            "BITRIX24_CLIENT_ID": CLIENT_ID,
            "BITRIX24_CLIENT_SECRET": CLIENT_SECRET,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.ports[APP]),
            "APP_BX24_JS_URL": f"{self.sandbox_url}/sandbox/bx24.js",
            "APP_PORTALS_RELOAD_S": "2",
        }

    def ready_url(self, name: str) -> str:
        if name == "sandbox":
            return f"{self.sandbox_url}/sandbox/info"
        if name == SURVEY:
            return f"{self.survey_url}/healthz"
        if name == APP:
            return f"{self.app_url}/healthz"
        port = self.ports["ingest_health" if name == "ingest" else name]
        return f"http://127.0.0.1:{port}/readyz"

    def args(self, name: str) -> list[str]:
        base = [sys.executable, "-m", "services.cli"]
        if name == "sandbox":
            return [
                *base,
                "sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["sandbox"]),
                "--secret",
                SANDBOX_SECRET,
                "--app-token",
                SANDBOX_APP_TOKEN,
                *self._sandbox_portals(),
                "--smtp-port",
                str(self.ports["smtp"]),
                *self.sandbox_args,
            ]
        return [*base, "run", name]

    def _sandbox_portals(self) -> list[str]:
        """Webhook mode: the default portal's events to ingest. Application mode: the named
        portals with the application registered (its events are bound at install)."""
        if not self.app_mode:
            return ["--handler", f"{self.ingest_url}/webhooks/bitrix24"]
        return [
            *(arg for name in self.portals for arg in ("--portal", name)),
            "--app",
            f"{CLIENT_ID}:{CLIENT_SECRET}",
            "--app-install-url",
            f"{self.app_url}/app/install",
            "--app-callback-url",
            f"{self.app_url}/app/events",
        ]

    def process(self, name: str) -> Process:
        """`name` as the supervisor runs it."""
        variable = {
            "sandbox": "SANDBOX_PORT",
            "ingest": "INGEST_PORT",
            SURVEY: "SURVEY_PORT",
            APP: "APP_PORT",
        }.get(name, "HEALTH_PORT")
        return Process(
            name,
            self.args(name),
            self.env(name),
            self.ready_url(name),
            Listener("127.0.0.1", self.ports[name], variable),
        )

    def start(self, name: str, wait_s: float = 60.0) -> None:
        self.supervisor.start(self.process(name), wait_s)

    def wait_ready(self, name: str, wait_s: float = 60.0) -> None:
        self.supervisor.wait_ready(name, wait_s)

    def start_order(self) -> tuple[str, ...]:
        """What `start_all` starts: the sandbox, the application (application mode) and the
        pipeline, in that order."""
        return ("sandbox", *((APP,) if self.app_mode else ()), *PIPELINE)

    def start_all(self) -> None:
        self.started_at = datetime.now(UTC)
        self.supervisor.start_all([self.process(name) for name in self.start_order()])

    def kill(self, name: str) -> None:
        """A crash: SIGKILL, nothing finishes."""
        self.supervisor.kill(name)

    def stop(self, name: str, timeout_s: float = 30.0) -> int:
        """A deploy: SIGTERM, in-flight work finishes; returns the exit code."""
        return self.supervisor.stop(name, timeout_s)

    def stop_all(self) -> None:
        """Every process stopped; a start still under way in another thread starts nothing."""
        self.supervisor.stop_all()

    def tail(self, name: str, lines: int = 20) -> str:
        return self.supervisor.tail(name, lines)


@asynccontextmanager
async def running(stack: Stack) -> AsyncIterator[Stack]:
    """The whole stack started (each process ready before the next); stopped on the way out,
    also when cancelled (Ctrl-C) half-way through starting."""
    try:
        await asyncio.to_thread(stack.start_all)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)
