"""The follow-up part of `nps demo`: the leads and tasks crm_sync created for the demo's answers,
followed by dispatch; some of them closed or taken in work in the sandbox portal as people do,
then followed until dispatch shows them so (the portal's update events make it read them at
once), so that the dashboard's follow-up view has a loop closed % and times to show.

It drives the running pipeline from outside: the sandbox over HTTP and the follow-up through
dispatch's read module. Nothing personal is printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from services.dispatch import read as followup_read
from services.ops.demo_plan import Handling, followup_lines, handled_seen, handling

POLL_S = 0.5
ROWS_LIMIT = 10_000


class FollowupDemoError(RuntimeError):
    """The follow-up part did not finish; the message says what to look at."""


async def _rows(pool: asyncpg.Pool, where: followup_read.FollowupFilter) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await followup_read.followups(conn, where, limit=ROWS_LIMIT)


async def _recorded(
    pool: asyncpg.Pool, where: followup_read.FollowupFilter, expected: int, deadline: float
) -> list[dict[str, Any]]:
    """The demo's follow-ups once dispatch recorded at least `expected`."""
    while True:
        rows = await _rows(pool, where)
        if len(rows) >= expected:
            return rows
        if time.monotonic() > deadline:
            raise FollowupDemoError(
                f"dispatch follows {len(rows)} of the {expected} leads and tasks crm_sync created"
                " for the demo's answers; check that dispatch of `make run` is up and"
                " `nps dlq list`"
            )
        await asyncio.sleep(POLL_S)


async def _handle(sandbox: httpx.AsyncClient, steps: Sequence[Handling]) -> None:
    for step in steps:
        params: list[tuple[str, str | int | float | bool | None]] = [("to", step.to)]
        params += [("lead", lead) for lead in step.leads]
        params += [("task", task) for task in step.tasks]
        (await sandbox.post("/sandbox/handle", params=params)).raise_for_status()


async def run_followup_demo(
    sandbox_url: str,
    pool: asyncpg.Pool,
    *,
    portal: str,
    since: datetime,
    expected: int,
    timeout_s: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Wait until dispatch follows the `expected` leads and tasks created for the demo's answers
    (on `portal`, since `since`), close or take in work some of them in the sandbox, follow
    until dispatch shows it; print and return the loop."""
    where = followup_read.FollowupFilter(portal=portal, since=since)
    deadline = time.monotonic() + timeout_s
    rows = await _recorded(pool, where, expected, deadline)
    still_open = [row for row in rows if row["state"] == "open"]
    steps = handling(
        [row["entity_id"] for row in still_open if row["entity_type"] == "lead"],
        [row["entity_id"] for row in still_open if row["entity_type"] == "task"],
    )
    moved = sum(len(step.leads) + len(step.tasks) for step in steps)
    echo(
        f"\nFollow-up: dispatch follows {len(rows)} leads and tasks created for these answers;"
        f" in the sandbox portal, as their managers: {moved} closed or taken in work…"
    )
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as sandbox:
        await _handle(sandbox, steps)
    while True:
        rows = await _rows(pool, where)
        states = {(row["entity_type"], row["entity_id"]): row["state"] for row in rows}
        seen = handled_seen(steps, states)
        if seen == moved:
            break
        if time.monotonic() > deadline:
            raise FollowupDemoError(
                f"dispatch shows {seen} of the {moved} leads and tasks the demo moved; the"
                " sandbox sends ONCRMLEADUPDATE / ONTASKUPDATE to ingest (bound by `make run`),"
                " else dispatch reads them at its schedule (dispatch.followup.read_every_minutes)"
            )
        await asyncio.sleep(POLL_S)
    seconds = time.monotonic() - started
    async with pool.acquire() as conn:
        total = await followup_read.loop_closed_total(conn, datetime.now(since.tzinfo), where)
    for line in followup_lines(total, moved, seconds):
        echo(line)
    return {
        "followed": total["followed"],
        "open": total["open"],
        "in_work": total["in_work"],
        "closed": total["closed"],
        "moved": moved,
        "seconds": seconds,
        "handled": [
            {"to": step.to, "leads": list(step.leads), "tasks": list(step.tasks)} for step in steps
        ],
    }
