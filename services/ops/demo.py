"""`nps demo`: survey answers created in the sandbox portal, followed through the running pipeline
with a progress line, ending with the NPS report and what was written to the CRM.

The NPS shown follows the reports' cosmetics rule: per product (cosmetics included) and per
segment, where a cosmetics segment has its counts but no NPS, and a note says why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from services.scoring.commands import render_table
from services.scoring.report import ReportQuery, run_report
from shared.db import Conn, create_pool
from shared.settings import Settings


class DemoError(RuntimeError):
    """The demo cannot run or did not finish; the message says what to do."""


@dataclass(frozen=True)
class Progress:
    created: int
    scored: int
    actions_done: int
    actions_pending: int

    def line(self) -> str:
        return (
            f"answers scored {self.scored}/{self.created} · "
            f"CRM actions done {self.actions_done}, pending {self.actions_pending}"
        )


_PROGRESS_SQL = """
SELECT
  (SELECT count(*) FROM scoring_items WHERE portal = $1 AND item_id = ANY($2::bigint[])) AS scored,
  (SELECT count(*) FROM crm_actions a JOIN scoring_answers s USING (answer_id)
    WHERE a.portal = $1 AND s.item_id = ANY($2::bigint[]) AND a.state = 'done') AS done,
  (SELECT count(*) FROM crm_actions WHERE portal = $1 AND state = 'pending') AS pending
"""

_OUTCOMES_SQL = """
SELECT a.action, a.outcome, count(*) AS n
FROM crm_actions a JOIN scoring_answers s USING (answer_id)
WHERE a.portal = $1 AND s.item_id = ANY($2::bigint[]) AND a.state = 'done'
GROUP BY a.action, a.outcome ORDER BY a.action, a.outcome
"""

_CONFLICTS_SQL = """
SELECT count(*) FROM crm_conflicts c JOIN scoring_answers s USING (answer_id)
WHERE c.portal = $1 AND s.item_id = ANY($2::bigint[])
"""


async def _create_answers(settings: Settings, count: int) -> tuple[str, list[int]]:
    base = f"http://{settings.sandbox_host}:{settings.sandbox_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            info = (await http.get("/sandbox/info")).raise_for_status().json()
            reply = await http.post("/sandbox/answers", json={"count": count, "spread_days": 90})
            created: list[int] = reply.raise_for_status().json()["created"]
    except httpx.HTTPError as exc:
        raise DemoError(
            f"the sandbox portal does not answer at {base} ({type(exc).__name__}); "
            "start the pipeline with `make run` in another terminal first"
        ) from None
    return str(info["member_id"]), created


async def nps_summary(conn: Conn, portal: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo's NPS rows of `portal`: by product, then by segment."""
    products = await run_report(conn, ReportQuery(by="product", portal=portal))
    segments = await run_report(conn, ReportQuery(by="segment", portal=portal))
    return [row.as_dict() for row in products], [row.as_dict() for row in segments]


def nps_text(products: list[dict[str, Any]], segments: list[dict[str, Any]]) -> str:
    """The NPS part of the demo's summary: both tables with their headings."""
    return "\n".join(
        [
            "NPS by product (all answers in the sandbox portal):",
            render_table(products, "product"),
            "",
            "NPS by segment (cosmetics: per product only):",
            render_table(segments, "segment"),
        ]
    )


async def _progress(pool: asyncpg.Pool, portal: str, items: list[int]) -> Progress:
    row = await pool.fetchrow(_PROGRESS_SQL, portal, items)
    assert row is not None
    return Progress(len(items), row["scored"], row["done"], row["pending"])


async def run_demo(
    settings: Settings,
    count: int,
    timeout_s: float = 300.0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create `count` answers, wait until the pipeline has settled, print and return a summary."""
    if not settings.sandbox:
        raise DemoError(
            "nps demo creates answers in the sandbox portal; BITRIX24_WEBHOOK_URL points at a real"
            " portal, so unset it (or run `nps demo` against a `make run` without it)"
        )
    portal, items = await _create_answers(settings, count)
    echo(f"created {len(items)} survey answers in the sandbox portal; following them…")
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
    try:
        deadline = time.monotonic() + timeout_s
        last: Progress | None = None
        steady = 0
        while True:
            progress = await _progress(pool, portal, items)
            settled = progress.scored == progress.created and progress.actions_pending == 0
            steady = steady + 1 if settled and progress == last else 0
            if progress != last:
                echo(progress.line())
            last = progress
            if steady >= 3:
                break
            if time.monotonic() > deadline:
                raise DemoError(
                    f"not settled after {timeout_s:.0f} s ({progress.line()}); check that every "
                    "service of `make run` is up and look at `nps dlq list`"
                )
            await asyncio.sleep(0.5)
        async with pool.acquire() as conn:
            rows, segments = await nps_summary(conn, portal)
            outcomes = await conn.fetch(_OUTCOMES_SQL, portal, items)
            conflicts = int(await conn.fetchval(_CONFLICTS_SQL, portal, items) or 0)
    finally:
        await pool.close()
    crm = {f"{r['action']}:{r['outcome']}": int(r["n"]) for r in outcomes}
    summary: dict[str, Any] = {
        "answers": len(items),
        "crm": crm,
        "conflicts": conflicts,
        "report": rows,
        "segments": segments,
    }
    echo("\n" + nps_text(rows, segments))
    echo("")
    for line in crm_lines(crm, conflicts):
        echo(line)
    return summary


OUTCOME_MEANINGS: dict[str, str] = {
    "created": "created",
    "existing": "found already created (a retry), not created again",
    "patched": "every field it had to change written",
    "unchanged": "nothing to change",
    "conflict": "at least one field left alone (the others written)",
    "skipped": "older than the answer already in the contact, nothing written",
}
"""What each outcome of a CRM action means, as the demo prints it."""


def crm_lines(crm: dict[str, int], conflicts: int) -> list[str]:
    """What the CRM got: actions (one per answer and kind) by outcome, then the legacy values
    left alone, which count contact fields, not answers."""
    lines = ["What the CRM got for these answers (actions: one per answer and kind):"]
    for key, count in crm.items():
        action, outcome = key.split(":")
        lines.append(f"  {action:<10} {outcome:<10} {count:>5}  {OUTCOME_MEANINGS[outcome]}")
    patches = crm.get("contact:conflict", 0)
    left_alone = f"  legacy values left alone (nps conflicts): {conflicts} contact field(s)"
    if patches:
        left_alone += f", in the {patches} contact patch(es) with outcome conflict"
    lines.append(left_alone)
    return lines
