"""`nps run all` as a person runs it (`make run`): it starts every process, says what runs where,
and stops them all on Ctrl-C or SIGTERM, also half-way through starting; when one of them dies it
says which, stops the rest and exits non-zero. Never a traceback, never a process left behind."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.run_all import RUNNING, STARTUP_S, RunAll, run_all_env, running


@pytest.fixture
async def env(pg_server: str, amqp_server: str) -> AsyncIterator[dict[str, str]]:
    """`nps run all`'s environment: a database and a vhost of its own, free ports, the sandbox."""
    async with run_all_env(
        "run_all", pg_server, amqp_server, dropped={"BITRIX24_WEBHOOK_URL"}
    ) as env:
        yield env


@pytest.fixture
def run_all(env: dict[str, str]) -> Iterator[RunAll]:
    with running(env) as started:
        yield started


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
