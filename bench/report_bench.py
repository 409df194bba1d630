"""NPS reports over 1,000,000 answers: seeds a scratch database (COPY), rebuilds the rollups
(daily, manager-monthly, manager-weekly: scoring's `bulk_load`), and prints the time of every report
shape (target: 100 ms each), plus the cost of scoring one more submission on top (answers, rollup
cells, names and outbox in one transaction).

`BENCH_REPORT_ANSWERS` changes the volume; `DATABASE_URL` names the server (a scratch database
`nps_bench_<random>` is created there and dropped afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from services.harness import scratch
from services.scoring.handlers import score_submission
from services.scoring.nps import categorize
from services.scoring.read import ReportQuery, run_report
from services.scoring.store import ANSWER_COLUMNS, bulk_load
from shared.db import create_pool
from shared.events import FormSubmitted
from shared.logging import configure_logging
from shared.outbox import Outbox

ANSWERS = int(os.environ.get("BENCH_REPORT_ANSWERS", "1000000"))
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/nps")
TARGET_MS = 100.0
RUNS = 7
PORTAL = "bench-portal"
FIRST_DAY = date(2023, 1, 1)
DAYS = 3 * 365
MANAGERS = 40
COSMETICS = (10, "Cosmetics", [f"COS-{n:02d}" for n in range(1, 9)])
EQUIPMENT = [(12 + 2 * n, f"Equipment {n}", f"EQ-{n:02d}") for n in range(6)]
SCORE_WEIGHTS = [2, 1, 1, 1, 2, 3, 4, 8, 10, 14, 16]  # 0..10: mostly passives and promoters

SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("by product", {"by": "product"}),
    ("by segment", {"by": "segment"}),
    ("by manager", {"by": "manager"}),
    ("trend by day (3 years)", {"by": "period", "period": "day"}),
    ("trend by week", {"by": "period", "period": "week"}),
    ("trend by month", {"by": "period", "period": "month"}),
    ("trend by quarter", {"by": "period", "period": "quarter"}),
    ("trend by year", {"by": "period", "period": "year"}),
    ("custom range", {"by": "period", "date_from": "2024-02-10", "date_to": "2024-11-03"}),
    ("product x month", {"by": "product", "period": "month"}),
    ("manager x quarter", {"by": "manager", "period": "quarter"}),
    ("manager, segment + 90 days", {"by": "manager", "segment": "12", "date_from": "2025-10-03"}),
    ("product, segment by name", {"by": "product", "segment": "Cosmetics"}),
    ("month trend of one product", {"by": "period", "period": "month", "product": "EQ-03"}),
    ("day trend of one manager", {"by": "period", "period": "day", "manager": 7}),
    ("segment, one manager, 1 year", {"by": "segment", "manager": 12, "date_from": "2025-01-01"}),
    (
        "manager, 1 year mid-month",
        {"by": "manager", "date_from": "2024-06-15", "date_to": "2025-06-14"},
    ),
    (
        "manager x week, one quarter",
        {"by": "manager", "period": "week", "date_from": "2025-07-01", "date_to": "2025-09-30"},
    ),
    ("manager x week (3 years)", {"by": "manager", "period": "week"}),
]


def scratch_database() -> contextlib.AbstractAsyncContextManager[str]:
    """A new, migrated database of its own on `DATABASE_URL` (yields its DSN), dropped after."""
    return scratch.scratch_database(DATABASE_URL, scratch.scratch_name("bench_report"))


def _answers(count: int, seed: int = 24) -> Iterator[tuple[Any, ...]]:
    """`count` answer rows: cosmetics items answer 1-4 products, equipment items one."""
    rng = random.Random(seed)
    scores = list(range(11))
    item = 0
    produced = 0
    while produced < count:
        item += 1
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        at = datetime(day.year, day.month, day.day, rng.randrange(24), tzinfo=UTC)
        manager = rng.randrange(1, MANAGERS + 1) if rng.random() > 0.03 else None
        if rng.random() < 0.5:
            category_id, segment, skus = COSMETICS
            kind = "cosmetics"
            products = rng.sample(skus, rng.randint(1, 4))
        else:
            category_id, segment, sku = rng.choice(EQUIPMENT)
            kind = "equipment"
            products = [sku]
        event_id = uuid.uuid4()
        for sku in products[: count - produced]:
            score = rng.choices(scores, SCORE_WEIGHTS)[0] if rng.random() > 0.08 else None
            values = {
                "answer_id": f"{PORTAL}:{item}:{sku}",
                "portal": PORTAL,
                "entity_type_id": 1038,
                "item_id": item,
                "category_id": category_id,
                "segment": segment,
                "kind": kind,
                "sku": sku,
                "product_name": sku.title(),
                "scale": "0-10",
                "score": score,
                "category": categorize(score) if score is not None else None,
                "comment": None,
                "service_request": kind == "equipment" and score is not None and score < 4,
                "contact_id": rng.randrange(1, 200_000),
                "responsible_id": manager,
                "submitted_at": at,
                "updated_at": at,
                "day": day,
                "is_current": rng.random() > 0.01,
                "revision": 1,
                "source_event_id": event_id,
            }
            yield tuple(values[column] for column in ANSWER_COLUMNS)
            produced += 1


async def _seed(conn: asyncpg.Connection, count: int) -> tuple[float, int]:
    started = time.perf_counter()
    cells = await bulk_load(conn, _answers(count))
    await conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started, cells


async def _time_reports(pool: asyncpg.Pool) -> None:
    print(f"{'report':<30} {'rows':>6} {'median ms':>10} {'max ms':>8}")
    worst = 0.0
    for name, shape in SHAPES:
        query = ReportQuery.model_validate(shape)
        timings: list[float] = []
        rows = 0
        async with pool.acquire() as conn:
            for _ in range(RUNS):
                started = time.perf_counter()
                rows = len(await run_report(conn, query))
                timings.append((time.perf_counter() - started) * 1000)
        median = statistics.median(timings)
        worst = max(worst, median)
        print(f"{name:<30} {rows:>6} {median:>10.1f} {max(timings):>8.1f}")
    verdict = "within" if worst <= TARGET_MS else "OVER"
    print(f"slowest median {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")


async def _time_scoring(pool: asyncpg.Pool, submissions: int = 300) -> None:
    """Scoring on top of the seeded volume: each submission is one transaction."""
    started = time.perf_counter()
    for n in range(submissions):
        at = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(minutes=n)
        await score_submission(
            pool,
            Outbox(),
            FormSubmitted(
                correlation_id=f"bench-{n}",
                portal={"member_id": PORTAL},
                entity_type_id=1038,
                item_id=10_000_000 + n,
                category_id=COSMETICS[0],
                segment=COSMETICS[1],
                kind="cosmetics",
                scale="0-10",
                responsible_id=n % MANAGERS + 1,
                submitted_at=at,
                updated_at=at,
                answers=[
                    {"sku": sku, "name": sku.title(), "score": (n + i) % 11}
                    for i, sku in enumerate(COSMETICS[2][:3])
                ],
            ),
        )
    per = (time.perf_counter() - started) * 1000 / submissions
    print(f"scoring one 3-product submission on top: {per:.1f} ms (sequential, {submissions} runs)")


async def run(count: int = ANSWERS) -> None:
    async with scratch_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            seconds, cells = await _seed(conn, count)
        finally:
            await conn.close()
        print(
            f"seeded {count:,} answers in {seconds:.1f} s (COPY; rollups rebuilt: {cells:,} cells)"
        )
        pool = await create_pool(dsn, max_size=2)
        try:
            await _time_reports(pool)
            await _time_scoring(pool)
        finally:
            await pool.close()


def main() -> None:
    configure_logging("warning")  # a line per scored submission is not part of the report
    asyncio.run(run())


if __name__ == "__main__":
    main()
