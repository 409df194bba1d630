"""The pipeline as separate OS processes on free local ports: for the fault suite, the chaos
command and the pipeline benchmark. Each process can be killed (SIGKILL), stopped (SIGTERM) and
started again, the way a crash or a deploy would do it.
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """Sandbox portal + the four services, each its own process, on ports of their own, under
    the supervisor `nps run all` uses (`shared.supervisor`)."""

    database_url: str
    rabbitmq_url: str
    config: Path
    log_dir: Path
    sandbox_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    supervisor: Supervisor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("sandbox", *PIPELINE, "ingest_health", SURVEY, DISPATCH, "smtp"):
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
            **self.extra_env,
        }
        env.pop("BITRIX24_WEBHOOK_URL", None)
        env.pop("BITRIX24_APP_TOKEN", None)
        if (name in PIPELINE and name != "ingest") or name == DISPATCH:
            env["HEALTH_PORT"] = str(self.ports[name])
        return env

    def ready_url(self, name: str) -> str:
        if name == "sandbox":
            return f"{self.sandbox_url}/sandbox/info"
        if name == SURVEY:
            return f"{self.survey_url}/healthz"
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
                "--handler",
                f"{self.ingest_url}/webhooks/bitrix24",
                "--smtp-port",
                str(self.ports["smtp"]),
                *self.sandbox_args,
            ]
        return [*base, "run", name]

    def process(self, name: str) -> Process:
        """`name` as the supervisor runs it."""
        variable = {"sandbox": "SANDBOX_PORT", "ingest": "INGEST_PORT", SURVEY: "SURVEY_PORT"}.get(
            name, "HEALTH_PORT"
        )
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

    def start_all(self) -> None:
        self.started_at = datetime.now(UTC)
        self.supervisor.start_all([self.process(name) for name in ("sandbox", *PIPELINE)])

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
