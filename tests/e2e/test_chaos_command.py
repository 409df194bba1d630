"""`nps chaos` as an operator runs it: a real process against the test session's servers, which
must hold nothing of the run afterwards (scratch database, vhost, stack processes)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.chaos import SCRATCH, assert_nothing_left, chaos, environment
from tests.support.paths import ROOT

CLEAN = re.compile(
    r"^verdict: items \d+ · deals \d+ · answers \d+ · requests [1-9]\d* · messages [1-9]\d* ·"
    r" lost 0 · duplicated 0 · resent [01] · overwritten 0 · dlq 0$",
    re.M,
)


@pytest.mark.timeout(300)
async def test_a_kill_mid_run_ends_in_a_clean_verdict_and_leaves_nothing_behind(
    pg_server: str, amqp_server: str, tmp_path: Path
) -> None:
    args = chaos(tmp_path, "--fault", "kill:router", "--fault", "kill:dispatch")
    result = await asyncio.to_thread(
        subprocess.run,
        [
            *args,
            "--answers",
            "60",
            "--sales",
            "20",
            "--campaign",
            "20",
            "--hold",
            "2",
            "--timeout",
            "200",
        ],
        cwd=ROOT,
        env=environment(pg_server, amqp_server),
        capture_output=True,
        text=True,
        timeout=290,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert CLEAN.search(result.stdout), result.stdout
    assert "kill:router: recovered" in result.stdout
    assert "kill:dispatch: recovered" in result.stdout
    assert "closing 20 sales, a campaign asking 20 contacts ('After the sale')" in result.stdout
    assert "dispatch's register: sent " in result.stdout
    assert "PASS: nothing lost, duplicated or overwritten; no dead letters" in result.stdout
    assert f"logs: {tmp_path}" in result.stdout
    assert {path.name for path in tmp_path.iterdir()} == {
        "portal.yaml",
        "sandbox.log",
        "ingest.log",
        "scoring.log",
        "router.log",
        "crm_sync.log",
        "survey.log",
        "dispatch.log",
        "campaign.csv",
        "campaign.log",
        "verdict.json",
    }
    assert "campaign 'chaos', survey 'After the sale': " in (tmp_path / "campaign.log").read_text()
    found = SCRATCH.search(result.stdout)
    assert found, result.stdout
    await assert_nothing_left(pg_server, found.group(1))


@pytest.mark.timeout(120)
async def test_ctrl_c_stops_the_stack_and_drops_the_scratch_database_and_vhost(
    pg_server: str, amqp_server: str, tmp_path: Path
) -> None:
    args = chaos(tmp_path, "--fault", "portal-outage", "--hold", "120")
    process = await asyncio.create_subprocess_exec(
        *args,
        "--answers",
        "20",
        cwd=ROOT,
        env=environment(pg_server, amqp_server),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(90):
        while not seen or "portal-outage: injecting" not in seen[-1]:
            line = (await process.stdout.readline()).decode()
            assert line, "".join(seen)
            seen.append(line)
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(60):
        rest, _ = await process.communicate()
    output = "".join(seen) + rest.decode()
    assert process.returncode == 130, output
    assert "interrupted: processes stopped, scratch database and vhost dropped" in output
    found = SCRATCH.search(output)
    assert found, output
    await assert_nothing_left(pg_server, found.group(1))
