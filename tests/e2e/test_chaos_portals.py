"""`nps chaos --portals 2` as an operator runs it (`make chaos` only: a stack in application mode
with two sandbox portals, each installing the application through its install flow, is heavy):
under kills (a pipeline service, the application, every service) and a server restart, each
portal's answers make its own leads, tasks, contact patches and rows exactly once, nothing
crosses to the other portal, and the servers hold nothing of the run afterwards."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.chaos import SCRATCH, assert_nothing_left, chaos, environment
from tests.support.paths import ROOT

ANSWERS = 150
PORTAL = re.compile(
    r"^portal (alpha|beta) \(([0-9a-f]{32})\): items (\d+) · deals (\d+) · answers (\d+) ·"
    r" leads (\d+) · tasks (\d+) · patches (\d+) · lost 0 · duplicated 0 · overwritten 0$",
    re.M,
)
CLEAN = re.compile(
    r"^verdict: portals 2 · items \d+ · deals \d+ · answers \d+ · leads \d+ · tasks \d+ ·"
    r" patches \d+ · lost 0 · duplicated 0 · overwritten 0 · crossed 0 · dlq 0$",
    re.M,
)


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(("kill:crm_sync", "kill:app", "broker-restart"), id="kills-broker-restart"),
        pytest.param(("kill:all", "db-restart"), id="kill-all-db-restart"),
    ],
)
async def test_two_portals_under_kills_and_a_restart_each_get_their_own_work_only(
    pg_server: str, amqp_server: str, tmp_path: Path, faults: tuple[str, ...]
) -> None:
    args = chaos(tmp_path, "--portals", "2", *(a for f in faults for a in ("--fault", f)))
    result = await asyncio.to_thread(
        subprocess.run,
        [*args, "--yes", "--answers", str(ANSWERS), "--hold", "3", "--timeout", "400"],
        cwd=ROOT,
        env=environment(pg_server, amqp_server),
        capture_output=True,
        text=True,
        timeout=880,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for name in ("alpha", "beta"):
        assert f"installing the application on {name}: http://127.0.0.1:" in out
        assert f"/p/{name}/install …" in out
    for fault in faults:
        assert f"{fault}: recovered" in out
    portals = {found.group(1): found.groups()[1:] for found in PORTAL.finditer(out)}
    assert set(portals) == {"alpha", "beta"}, out
    assert portals["alpha"][0] != portals["beta"][0]
    for member_id, items, deals, answers, leads, tasks, patches in portals.values():
        assert f"installed (member_id {member_id})" in out
        # The warm-up's 5 answers and 2 NPS deals, then the run's, in each portal.
        assert (int(items), int(deals)) == (5 + ANSWERS, 2 + ANSWERS // 4), out
        assert int(answers) >= int(items), out
        assert min(int(leads), int(tasks), int(patches)) > 0, out
    assert CLEAN.search(out), out
    assert "PASS: in every portal nothing lost, duplicated or overwritten; nothing crossed" in out
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert set(verdict["portals"]) == {"alpha", "beta"}
    assert verdict["crossed"] == 0
    assert "app.log" in {path.name for path in tmp_path.iterdir()}
    found = SCRATCH.search(out)
    assert found, out
    await assert_nothing_left(pg_server, found.group(1))
