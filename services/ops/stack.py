"""The pipeline as separate OS processes on free local ports: for the fault suite, the chaos
command and the pipeline benchmark. Each process can be killed (SIGKILL), stopped (SIGTERM) and
started again, the way a crash or a deploy would do it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shared.settings import SANDBOX_APP_TOKEN, SANDBOX_SECRET, SANDBOX_USER_ID

PIPELINE: tuple[str, ...] = ("ingest", "scoring", "router", "crm_sync")
SURVEY = "survey"
"""The survey page: started on demand (`start("survey")`), not by `start_all`."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local http
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Stack:
    """Sandbox portal + the four services, each its own process, on ports of their own."""

    database_url: str
    rabbitmq_url: str
    config: Path
    log_dir: Path
    sandbox_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _stopped: bool = field(default=False, init=False)
    _starting: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("sandbox", *PIPELINE, SURVEY):
            self.ports.setdefault(name, free_port())
        self.log_dir.mkdir(parents=True, exist_ok=True)

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
            "HEALTH_HOST": "127.0.0.1",
            "SURVEY_HOST": "127.0.0.1",
            "SURVEY_PORT": str(self.ports[SURVEY]),
            "LOG_FORMAT": "json",
            **self.extra_env,
        }
        env.pop("BITRIX24_WEBHOOK_URL", None)
        env.pop("BITRIX24_APP_TOKEN", None)
        if name in PIPELINE and name != "ingest":
            env["HEALTH_PORT"] = str(self.ports[name])
        return env

    def ready_url(self, name: str) -> str:
        if name == "sandbox":
            return f"{self.sandbox_url}/sandbox/info"
        if name == SURVEY:
            return f"{self.survey_url}/healthz"
        return f"http://127.0.0.1:{self.ports[name]}/readyz"

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
                *self.sandbox_args,
            ]
        return [*base, "run", name]

    def start(self, name: str, wait_s: float = 60.0) -> None:
        with self._starting:  # never a process started after stop_all took its list
            if self._stopped:
                raise RuntimeError(f"{name} not started: the stack is stopped")
            with (self.log_dir / f"{name}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen(  # noqa: S603 - our interpreter and arguments
                    self.args(name), env=self.env(name), stdout=log, stderr=subprocess.STDOUT
                )
        self.wait_ready(name, wait_s)

    def wait_ready(self, name: str, wait_s: float = 60.0) -> None:
        deadline = time.monotonic() + wait_s
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")
            if _answers(self.ready_url(name)):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {wait_s:.0f} s: {self.tail(name)}")

    def start_all(self) -> None:
        self.started_at = datetime.now(UTC)
        for name in ("sandbox", *PIPELINE):
            self.start(name)

    def kill(self, name: str) -> None:
        """A crash: SIGKILL, nothing finishes."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, name: str, timeout_s: float = 30.0) -> int:
        """A deploy: SIGTERM, in-flight work finishes; returns the exit code."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return int(proc.returncode)

    def stop_all(self) -> None:
        """Every process stopped; a start still under way in another thread starts nothing."""
        with self._starting:
            self._stopped = True
        for name in reversed(list(self.procs)):
            self.stop(name)

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@asynccontextmanager
async def running(stack: Stack) -> AsyncIterator[Stack]:
    """The whole stack started (each process ready before the next); stopped on the way out,
    also when cancelled (Ctrl-C) half-way through starting."""
    try:
        await asyncio.to_thread(stack.start_all)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)
