"""`nps run all` as a person runs it (`make run`): it starts every process, says what runs where,
and stops them all on Ctrl-C or SIGTERM, also half-way through starting; when one of them dies it
says which, stops the rest and exits non-zero. Never a traceback, never a process left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
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


@pytest.fixture
async def env(pg_server: str, amqp_server: str) -> AsyncIterator[dict[str, str]]:
    """`nps run all`'s environment: a database and a vhost of its own, free ports, the sandbox."""
    async with scratch("run_all", pg_server, amqp_server, vhost_required=False) as (dsn, amqp):
        base = {k: v for k, v in os.environ.items() if k != "BITRIX24_WEBHOOK_URL"}
        yield {
            **base,
            "DATABASE_URL": dsn,
            "RABBITMQ_URL": amqp,
            "NPS_CONFIG": str(EXAMPLE_CONFIG),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            **dict.fromkeys(HOSTS, "127.0.0.1"),
            **{port: str(free_port()) for port in PORTS},
        }


@pytest.fixture
def run_all(env: dict[str, str]) -> Iterator[RunAll]:
    started = RunAll(env)
    try:
        yield started
    finally:
        started.kill()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_ctrl_c_stops_everything(run_all: RunAll) -> None:
    run_all.wait_for(RUNNING)
    assert set(run_all.pids()) == {
        "sandbox",
        "ingest",
        "scoring",
        "router",
        "crm_sync",
        "dispatch",
        "reports",
        "survey",
    }

    os.killpg(run_all.proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C

    assert run_all.finish() == 0


def test_sigterm_while_starting_stops_what_started_and_starts_nothing_more(
    run_all: RunAll, env: dict[str, str]
) -> None:
    sandbox = f"http://127.0.0.1:{env['SANDBOX_PORT']}/sandbox/info"
    deadline = time.monotonic() + STARTUP_S
    while not _answers(sandbox):
        assert run_all.proc.poll() is None, run_all.output
        assert time.monotonic() < deadline, run_all.output
        time.sleep(0.1)

    run_all.proc.send_signal(signal.SIGTERM)

    assert run_all.finish() == 0
    assert "is running" not in run_all.output


def test_a_process_that_dies_is_named_and_the_others_stop(run_all: RunAll) -> None:
    run_all.wait_for(RUNNING)

    os.kill(run_all.pids()["router"], signal.SIGKILL)

    assert run_all.finish() == 1
    assert run_all.output.strip().splitlines()[-1] == (
        "router was killed by SIGKILL; stopped the others"
    )
