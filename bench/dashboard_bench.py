"""The NPS dashboard over 1,000,000 answers: every view rendered through the app (HTTP in-process,
token check, queries, view model, HTML), median of 7 runs per view; target 200 ms each.

Seeds a scratch database the way `report_bench` does (COPY, rollups rebuilt), adds 20,000
crm_sync conflicts, then times each view with typical filters. The ops view asks the broker at
`RABBITMQ_URL` for dead-letter counts ("unknown" when it cannot say, which is timed too).
`BENCH_REPORT_ANSWERS` changes the volume; `DATABASE_URL` names the server (the scratch database
`nps_bench_<random>` is dropped afterwards).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import asyncpg
import httpx

from bench.report_bench import ANSWERS, PORTAL, _seed, scratch_database
from services.crm_sync.store import Changes, ConflictRow, record
from services.reports.app import create_app
from shared.outbox import Outbox

RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
TARGET_MS = 200.0
RUNS = 7
CONFLICTS = 20_000
TOKEN = "bench-dashboard-token"

VIEWS: list[tuple[str, str]] = [
    ("trend by month", "/"),
    ("trend by week", "/?period=week"),
    ("trend by day (3 years)", "/?period=day"),
    ("trend by quarter, one manager", "/?period=quarter&manager=7"),
    ("trend by day, one manager", "/?period=day&manager=7"),
    ("trend by week, segment, 90 days", "/?period=week&segment=12&from=2025-10-03"),
    ("products (monthly sparklines)", "/products"),
    ("products (weekly sparklines)", "/products?period=week"),
    ("products, segment, daily, 1 year", "/products?segment=10&period=day&from=2025-01-01"),
    ("products, one manager", "/products?manager=7"),
    ("managers", "/managers"),
    ("managers, segment, 90 days", "/managers?segment=12&from=2025-10-03"),
    ("managers, mid-month year", "/managers?from=2024-06-15&to=2025-06-14"),
    ("detractors & service", "/attention"),
    ("detractors, one product", "/attention?product=EQ-03"),
    ("detractors, manager, 90 days", "/attention?manager=7&from=2025-10-03"),
    ("ops (conflicts, DLQ)", "/ops"),
]


async def _add_conflicts(conn: asyncpg.Connection, count: int) -> None:
    """`count` legacy values left alone, recorded the way crm_sync records them."""
    conflicts = [
        ConflictRow(
            portal=PORTAL,
            contact_id=n % 200_000,
            field=f"UF_CRM_NPS_EQ_{n % 6}",
            reason="legacy value kept",
            current=f"legacy {n}",
            proposed=n % 11,
            answer_id=f"{PORTAL}:{n}:EQ-00",
            action_id=f"bench-{n}",
        )
        for n in range(1, count + 1)
    ]
    await record(Outbox(), conn, Changes(conflicts=conflicts))


async def _time_views(dsn: str) -> None:
    app = create_app(
        dsn,
        TOKEN,
        portal_url="https://bench.bitrix24.example/rest/1/secret/",
        rabbitmq_url=RABBITMQ_URL,
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    print(f"{'view':<34} {'KB':>6} {'median ms':>10} {'max ms':>8}")
    worst = 0.0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for name, url in VIEWS:
                timings: list[float] = []
                size = 0
                for _ in range(RUNS):
                    started = time.perf_counter()
                    response = await http.get(url, headers=headers)
                    timings.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                    size = len(response.content)
                median = statistics.median(timings)
                worst = max(worst, median)
                print(f"{name:<34} {size / 1024:>6.0f} {median:>10.1f} {max(timings):>8.1f}")
            ops = (await http.get("/ops", headers=headers)).text
    verdict = "within" if worst <= TARGET_MS else "OVER"
    print(f"slowest median {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    broker = "unknown (broker down or its queues not declared)" if "unknown" in ops else "counted"
    print(f"dead-letter sizes on the ops view: {broker}")


async def run(count: int = ANSWERS) -> None:
    async with scratch_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            seconds, cells = await _seed(conn, count)
            await _add_conflicts(conn, CONFLICTS)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        print(f"seeded {count:,} answers in {seconds:.1f} s ({cells:,} rollup cells)")
        print(f"and {CONFLICTS:,} conflicts")
        await _time_views(dsn)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
