"""`nps demo`: survey answers created in the sandbox portal, followed through the running pipeline
with a progress line, ending with the NPS report and what was written to the CRM.

Beside the smart-process answers, NPS deals are opened for won sales in the demo's NPS funnel and
answered: they end at the funnel's success or failure stage, detractors with a task for the head
of sales (the `stage` and `task` lines of the CRM summary, the "After the sale" segment row).

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


# The demo's answers: smart-process items $2 and NPS deals $3 (deals are entity type 2).
_MINE = """(entity_type_id <> 2 AND item_id = ANY($2::bigint[])
     OR entity_type_id = 2 AND item_id = ANY($3::bigint[]))"""

_PROGRESS_SQL = f"""
SELECT
  (SELECT count(*) FROM scoring_items WHERE portal = $1 AND {_MINE}) AS scored,
  (SELECT count(*) FROM crm_actions a JOIN scoring_answers s USING (answer_id)
    WHERE a.portal = $1 AND {_MINE.replace("entity_type_id", "s.entity_type_id")}
      AND a.state = 'done') AS done,
  (SELECT count(*) FROM crm_actions WHERE portal = $1 AND state = 'pending') AS pending
"""  # noqa: S608 - fixed text, parameters only

_OUTCOMES_SQL = f"""
SELECT a.action, a.outcome, count(*) AS n
FROM crm_actions a JOIN scoring_answers s USING (answer_id)
WHERE a.portal = $1 AND {_MINE.replace("entity_type_id", "s.entity_type_id")}
  AND a.state = 'done'
GROUP BY a.action, a.outcome ORDER BY a.action, a.outcome
"""  # noqa: S608 - fixed text, parameters only

_CONFLICTS_SQL = f"""
SELECT count(*) FROM crm_conflicts c JOIN scoring_answers s USING (answer_id)
WHERE c.portal = $1 AND {_MINE.replace("entity_type_id", "s.entity_type_id")}
"""  # noqa: S608 - fixed text, parameters only


@dataclass(frozen=True)
class Created:
    """What the demo created in the sandbox portal."""

    member_id: str
    items: list[int]
    deals: list[int]

    @property
    def answers(self) -> int:
        return len(self.items) + len(self.deals)


async def _create_answers(settings: Settings, count: int, deals: int) -> Created:
    base = f"http://{settings.sandbox_host}:{settings.sandbox_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            info = (await http.get("/sandbox/info")).raise_for_status().json()
            if not info.get("nps_deal_funnels"):
                deals = 0  # the portal YAML names no deal survey: smart-process answers only
            reply = await http.post(
                "/sandbox/answers", json={"count": count, "spread_days": 90, "deals": deals}
            )
            if reply.status_code == httpx.codes.CONFLICT:
                raise DemoError(f"the sandbox portal refused: {reply.json().get('detail')}")
            body = reply.raise_for_status().json()
    except httpx.HTTPError as exc:
        raise DemoError(
            f"the sandbox portal does not answer at {base} ({type(exc).__name__}); "
            "start the pipeline with `make run` in another terminal first"
        ) from None
    return Created(str(info["member_id"]), list(body["created"]), list(body.get("deals", [])))


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


async def _progress(pool: asyncpg.Pool, created: Created) -> Progress:
    row = await pool.fetchrow(_PROGRESS_SQL, created.member_id, created.items, created.deals)
    assert row is not None
    return Progress(created.answers, row["scored"], row["done"], row["pending"])


async def run_demo(
    settings: Settings,
    count: int,
    timeout_s: float = 300.0,
    echo: Callable[[str], None] = print,
    deals: int = 0,
) -> dict[str, Any]:
    """Create `count` answers and `deals` answered NPS deals, wait until the pipeline has
    settled, print and return a summary."""
    if not settings.sandbox:
        raise DemoError(
            "nps demo creates answers in the sandbox portal; BITRIX24_WEBHOOK_URL points at a real"
            " portal, so unset it (or run `nps demo` against a `make run` without it)"
        )
    created = await _create_answers(settings, count, deals)
    portal = created.member_id
    echo(
        f"created {len(created.items)} survey answers and {len(created.deals)} answered NPS deals"
        " in the sandbox portal; following them…"
    )
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
    try:
        deadline = time.monotonic() + timeout_s
        last: Progress | None = None
        steady = 0
        while True:
            progress = await _progress(pool, created)
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
            mine = (portal, created.items, created.deals)
            outcomes = await conn.fetch(_OUTCOMES_SQL, *mine)
            conflicts = int(await conn.fetchval(_CONFLICTS_SQL, *mine) or 0)
    finally:
        await pool.close()
    crm = {f"{r['action']}:{r['outcome']}": int(r["n"]) for r in outcomes}
    summary: dict[str, Any] = {
        "answers": len(created.items),
        "deals": len(created.deals),
        "crm": crm,
        "conflicts": conflicts,
        "report": rows,
        "segments": segments,
    }
    echo("\n" + nps_text(rows, segments))
    echo("\nWhat the CRM got for these answers:")
    for key, value in crm.items():
        action, outcome = key.split(":")
        echo(f"  {action:<10} {outcome:<10} {value}")
    echo(f"  values and stages left alone (nps conflicts): {conflicts}")
    if created.deals:
        echo(
            "  NPS deals: `stage patched` moved to the funnel's success or failure stage;"
            " `task created` for the head of sales about each detractor"
        )
    return summary
