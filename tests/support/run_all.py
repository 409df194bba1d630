"""`nps run all` as a person runs it, in a process group of its own: what the e2e tests of
`make run` and `make run-app` start, read and stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import pytest

from services.harness.scratch import scratch
from services.harness.stack import free_port
from tests.support.paths import EXAMPLE_CONFIG, ROOT

PORTS = (
    "SANDBOX_PORT",
    "INGEST_PORT",
    "SCORING_HEALTH_PORT",
    "ROUTER_HEALTH_PORT",
    "CRM_SYNC_HEALTH_PORT",
    "DISPATCH_HEALTH_PORT",
    "SANDBOX_SMTP_PORT",
    "REPORTS_PORT",
    "INGEST_HEALTH_PORT",
    "SURVEY_PORT",
)
HOSTS = ("SANDBOX_HOST", "INGEST_HOST", "HEALTH_HOST", "REPORTS_HOST", "SURVEY_HOST")
STARTUP_S = 120.0
RUNNING = "Ctrl-C stops everything."


@dataclass
class RunAll:
    """`nps run all` in a process group of its own (its children in it too), both output streams
    read as they come."""

    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "all"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + STARTUP_S
        while text not in self.output:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {STARTUP_S:.0f} s"
            time.sleep(0.2)

    def pids(self) -> dict[str, int]:
        return {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"^  (\w+)\s+pid (\d+) ", self.output, re.MULTILINE)
        }

    def finish(self) -> int:
        """The exit code, once `nps run all` ended; its whole process group is gone by then."""
        code = self.proc.wait(timeout=90)
        self._reader.join(timeout=10)
        assert "Traceback" not in self.output, self.output
        with pytest.raises(ProcessLookupError):
            os.killpg(self.proc.pid, 0)  # not one of its processes is left
        return code

    def kill(self) -> None:
        """Whatever still runs of it, killed."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.proc.wait(timeout=10)


@asynccontextmanager
async def run_all_env(
    name: str,
    pg_server: str,
    amqp_server: str,
    *,
    dropped: Collection[str],
    hosts: Collection[str] = HOSTS,
    ports: Collection[str] = PORTS,
    **extra: str,
) -> AsyncIterator[dict[str, str]]:
    """`nps run all`'s environment: this one's without `dropped`, a database and a vhost of its
    own (`name`), every one of `hosts` local, a free port for each of `ports`, and `extra`."""
    async with scratch(name, pg_server, amqp_server, vhost_required=False) as (dsn, amqp):
        base = {k: v for k, v in os.environ.items() if k not in dropped}
        yield {
            **base,
            "DATABASE_URL": dsn,
            "RABBITMQ_URL": amqp,
            "NPS_CONFIG": str(EXAMPLE_CONFIG),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "DATABASE_POOL_MAX": "6",  # as in the harness' stacks: the tests share the server
            **extra,
            **dict.fromkeys(hosts, "127.0.0.1"),
            **{port: str(free_port()) for port in ports},
        }


@contextmanager
def running(env: dict[str, str]) -> Iterator[RunAll]:
    """`nps run all` started with `env`, killed (its whole group) on the way out."""
    started = RunAll(env)
    try:
        yield started
    finally:
        started.kill()
