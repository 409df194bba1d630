"""Scoring persistence on the real PostgreSQL: rows, outbox, redelivery, superseding, rollup."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from services.harness.scratch import scratch_database, scratch_name
from services.scoring import store
from services.scoring.handlers import CONSUMER, score_submission
from services.scoring.periods import bucket_start
from services.scoring.report import ReportQuery, run_report
from shared.messaging import PermanentError
from shared.outbox import Outbox
from tests.support.scoring import T0, make_submission

LATER = "2024-03-05T10:00:01+03:00"


@pytest.fixture
def member() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


async def answers(pool: asyncpg.Pool, portal: str) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM scoring_answers WHERE portal = $1", portal)
    return {row["sku"]: dict(row) for row in rows}


async def outbox(pool: asyncpg.Pool, correlation_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await pool.fetch(
        "SELECT routing_key, body FROM outbox WHERE correlation_id = $1 ORDER BY id",
        correlation_id,
    )
    return [(row["routing_key"], json.loads(row["body"])) for row in rows]


DAILY = """SELECT category_id, sku, day, promoters, passives, detractors, score_sum
           FROM scoring_daily WHERE portal = $1"""
MONTHLY = """SELECT category_id, sku, responsible_id, month, promoters, passives, detractors,
                    score_sum FROM scoring_manager_monthly WHERE portal = $1"""
WEEKLY = """SELECT category_id, sku, responsible_id, week, promoters, passives, detractors,
                   score_sum FROM scoring_manager_weekly WHERE portal = $1"""
# The manager-weekly cells the current, scored answers add up to (what the rollup must hold).
WEEKLY_FROM_ANSWERS = """
    SELECT category_id, sku, coalesce(responsible_id, 0) AS responsible_id,
           date_trunc('week', day::timestamp)::date AS week,
           count(*) FILTER (WHERE category = 'promoter')::int AS promoters,
           count(*) FILTER (WHERE category = 'passive')::int AS passives,
           count(*) FILTER (WHERE category = 'detractor')::int AS detractors,
           sum(score)::bigint AS score_sum
    FROM scoring_answers WHERE portal = $1 AND is_current AND score IS NOT NULL
    GROUP BY 1, 2, 3, 4"""


async def cells(conn: Any, sql: str, portal: str) -> set[tuple[Any, ...]]:
    """Rollup cells that hold answers (cells emptied by updates stay behind as zeros)."""
    rows = await conn.fetch(sql, portal)
    return {tuple(row) for row in rows if row["promoters"] or row["passives"] or row["detractors"]}


def _summed(
    rows: set[tuple[Any, ...]], key: Callable[[tuple[Any, ...]], tuple[Any, ...]]
) -> dict[tuple[Any, ...], list[int]]:
    """The four counts of `rows` (their last four columns) added up per `key(row)`."""
    summed: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        cell = key(row)
        summed[cell] = [a + b for a, b in zip(summed.get(cell, [0] * 4), row[-4:], strict=True)]
    return summed


async def rollup(pool: asyncpg.Pool, portal: str) -> set[tuple[Any, ...]]:
    """The daily rollup of `portal`, after checking the manager-monthly and manager-weekly ones sum
    to the same per month and per week, and the weekly one equals the answers' own sums."""
    daily = await cells(pool, DAILY, portal)
    monthly = await cells(pool, MONTHLY, portal)
    weekly = await cells(pool, WEEKLY, portal)
    assert _summed(monthly, lambda r: (r[0], r[1], r[3])) == _summed(
        daily, lambda r: (r[0], r[1], bucket_start(r[2], "month"))
    )
    assert _summed(weekly, lambda r: (r[0], r[1], r[3])) == _summed(
        daily, lambda r: (r[0], r[1], bucket_start(r[2], "week"))
    )
    assert weekly == await cells(pool, WEEKLY_FROM_ANSWERS, portal)
    return daily


async def test_answers_are_stored_with_everything_analytics_needs(
    pool: asyncpg.Pool, member: str
) -> None:
    submission = make_submission(
        ("SERUM", 10), ("CREAM", None), ("MASK", 0), member_id=member, item_id=11
    )
    await score_submission(pool, Outbox(), submission)

    rows = await answers(pool, member)
    assert set(rows) == {"SERUM", "CREAM", "MASK"}
    serum = rows["SERUM"]
    assert {k: v for k, v in serum.items() if k not in {"submitted_at", "updated_at"}} == {
        "answer_id": f"{member}:11:SERUM",
        "portal": member,
        "entity_type_id": 1038,
        "item_id": 11,
        "category_id": 10,
        "segment": "Cosmetics",
        "kind": "cosmetics",
        "sku": "SERUM",
        "product_name": "serum",
        "scale": "0-10",
        "score": 10,
        "category": "promoter",
        "comment": "fine",
        "service_request": False,
        "contact_id": 501,
        "responsible_id": 5,
        "day": date(2024, 3, 5),
        "is_current": True,
        "revision": 1,
        "source_event_id": submission.event_id,
    }
    assert serum["submitted_at"] == datetime.fromisoformat("2024-03-05T07:00:00+00:00")
    assert (rows["CREAM"]["score"], rows["CREAM"]["category"]) == (None, None)
    assert (rows["MASK"]["score"], rows["MASK"]["category"]) == (0, "detractor")

    published = await outbox(pool, submission.correlation_id)
    assert [key for key, _ in published] == [
        "nps.scored.cosmetics.promoter",
        "nps.scored.cosmetics.detractor",
    ]
    assert [body["answer"]["sku"] for _, body in published] == ["SERUM", "MASK"]
    names = await pool.fetchrow(
        "SELECT name, kind FROM scoring_segments WHERE portal = $1 AND category_id = 10", member
    )
    assert names is not None
    assert tuple(names) == ("Cosmetics", "cosmetics")
    products = await pool.fetch(
        "SELECT sku, name FROM scoring_products WHERE portal = $1 ORDER BY sku", member
    )
    assert [tuple(row) for row in products] == [
        ("CREAM", "cream"),
        ("MASK", "mask"),
        ("SERUM", "serum"),
    ]
    assert await rollup(pool, member) == {
        (10, "MASK", date(2024, 3, 5), 0, 0, 1, 0),
        (10, "SERUM", date(2024, 3, 5), 1, 0, 0, 10),
    }
    assert await cells(pool, MONTHLY, member) == {
        (10, "MASK", 5, date(2024, 3, 1), 0, 0, 1, 0),
        (10, "SERUM", 5, date(2024, 3, 1), 1, 0, 0, 10),
    }


async def test_redelivery_and_the_same_version_again_change_nothing(
    pool: asyncpg.Pool, member: str
) -> None:
    submission = make_submission(("LASER", 4), member_id=member, kind="equipment")
    await score_submission(pool, Outbox(), submission)
    before = (await answers(pool, member), await outbox(pool, submission.correlation_id))

    await score_submission(pool, Outbox(), submission)
    swept = make_submission(("LASER", 9), member_id=member, kind="equipment")
    assert swept.event_id != submission.event_id
    await score_submission(pool, Outbox(), swept)

    assert (await answers(pool, member), await outbox(pool, submission.correlation_id)) == before
    assert await pool.fetchval(
        "SELECT count(*) FROM processed_messages WHERE consumer = $1 AND message_id = $2",
        CONSUMER,
        submission.event_id,
    )


async def test_a_deal_and_an_item_with_the_same_id_are_two_answers(
    pool: asyncpg.Pool, member: str
) -> None:
    item = make_submission(("LASER", 4), member_id=member, kind="equipment")
    deal = make_submission(
        ("DEAL-SALES", 9),
        member_id=member,
        kind="deal",
        entity_type_id=2,
        category_id=20,
        segment="After the sale",
        correlation_id="corr-deal",
        updated_at="2024-07-01T09:00:00+00:00",
    )
    await score_submission(pool, Outbox(), item)
    # The deal's updated_at is older than the item's: it is applied all the same.
    await score_submission(pool, Outbox(), deal)
    stored = await answers(pool, member)
    assert {sku: (row["answer_id"], row["kind"]) for sku, row in stored.items()} == {
        "LASER": (f"{member}:1:LASER", "equipment"),
        "DEAL-SALES": (f"{member}:D_1:DEAL-SALES", "deal"),
    }
    [(key, _)] = await outbox(pool, "corr-deal")
    assert key == "nps.scored.deal.promoter"


async def test_newer_version_supersedes_and_older_late_version_is_ignored(
    pool: asyncpg.Pool, member: str
) -> None:
    v1 = make_submission(("SERUM", 10), ("CREAM", 6), ("MASK", 3), member_id=member)
    v2 = make_submission(
        ("SERUM", 10), ("MASK", 9), member_id=member, updated_at="2024-03-06T12:00:00+03:00"
    )
    late = make_submission(
        ("SERUM", 0), ("PEEL", 2), member_id=member, updated_at="2024-03-05T11:00:00+03:00"
    )
    await score_submission(pool, Outbox(), v1)
    await score_submission(pool, Outbox(), v2)
    await score_submission(pool, Outbox(), late)

    rows = await answers(pool, member)
    assert {sku: (r["score"], r["is_current"], r["revision"]) for sku, r in rows.items()} == {
        "SERUM": (10, True, 1),
        "CREAM": (6, False, 2),
        "MASK": (9, True, 2),
    }
    assert {r["source_event_id"] for r in rows.values()} == {v2.event_id}
    published = await outbox(pool, v1.correlation_id)
    assert [(key, body["answer"]["sku"]) for key, body in published] == [
        ("nps.scored.cosmetics.promoter", "SERUM"),
        ("nps.scored.cosmetics.detractor", "CREAM"),
        ("nps.scored.cosmetics.detractor", "MASK"),
        ("nps.scored.cosmetics.promoter", "MASK"),
    ]
    superseding = published[-1][1]
    assert (
        superseding["supersedes"],
        superseding["previous_score"],
        superseding["previous_category"],
    ) == (True, 3, "detractor")
    assert superseding["causation_id"] == str(v2.event_id)
    assert await rollup(pool, member) == {
        (10, "SERUM", date(2024, 3, 5), 1, 0, 0, 10),
        (10, "MASK", date(2024, 3, 5), 1, 0, 0, 9),
    }
    stored_version = await pool.fetchval(
        "SELECT updated_at FROM scoring_items WHERE portal = $1 AND item_id = 1", member
    )
    assert stored_version == v2.updated_at


async def test_off_scale_score_is_permanent_and_stores_nothing(
    pool: asyncpg.Pool, member: str
) -> None:
    submission = make_submission(("SERUM", 9), ("MASK", 12), member_id=member, item_id=77)
    with pytest.raises(PermanentError, match="item 77, product MASK: score 12 rejected"):
        await score_submission(pool, Outbox(), submission)
    assert await answers(pool, member) == {}
    assert await outbox(pool, submission.correlation_id) == []
    assert not await pool.fetchval(
        "SELECT count(*) FROM processed_messages WHERE message_id = $1", submission.event_id
    )
    assert not await pool.fetchval("SELECT count(*) FROM scoring_items WHERE portal = $1", member)


async def test_rebuilt_rollup_equals_the_incrementally_maintained_one(
    pool: asyncpg.Pool, member: str
) -> None:
    for item, scores in enumerate([(("A", 9), ("B", 2)), (("A", 7),), (("B", None),)], 1):
        await score_submission(
            pool, Outbox(), make_submission(*scores, member_id=member, item_id=item)
        )
    await score_submission(
        pool,
        Outbox(),
        make_submission(
            ("A", 10),
            member_id=member,
            item_id=1,
            responsible_id=None,
            updated_at="2024-04-01T00:00:00Z",
        ),
    )
    daily = await rollup(pool, member)
    monthly = await cells(pool, MONTHLY, member)
    weekly = await cells(pool, WEEKLY, member)
    assert daily == {(10, "A", date(2024, 3, 5), 1, 1, 0, 17)}
    assert monthly == {
        (10, "A", 0, date(2024, 3, 1), 1, 0, 0, 10),
        (10, "A", 5, date(2024, 3, 1), 0, 1, 0, 7),
    }
    assert weekly == {
        (10, "A", 0, date(2024, 3, 4), 1, 0, 0, 10),
        (10, "A", 5, date(2024, 3, 4), 0, 1, 0, 7),
    }
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            written = await store.rebuild_rollups(conn)
            rebuilt = tuple([await cells(conn, sql, member) for sql in (DAILY, MONTHLY, WEEKLY)])
        finally:
            await transaction.rollback()
    assert rebuilt == (daily, monthly, weekly)
    assert written >= len(daily) + len(monthly) + len(weekly)


async def test_weekly_rollup_follows_inserts_supersedes_and_retracts(
    pool: asyncpg.Pool, member: str
) -> None:
    """Each step moves answers between ISO weeks and managers; the rollup tracks every delta.

    2024-03-10 is a Sunday (week of 4 March) and 2024-03-11 a Monday (week of 11 March).
    """
    sunday, monday = "2024-03-10T12:00:00+03:00", "2024-03-11T12:00:00+03:00"
    steps = [
        # Inserts: two items in the week of 4 March, one in the week of 11 March.
        make_submission(("A", 9), ("B", 3), member_id=member, item_id=1, submitted_at=sunday),
        make_submission(("A", 7), member_id=member, item_id=2, submitted_at=sunday),
        make_submission(
            ("A", 10), member_id=member, item_id=3, submitted_at=monday, updated_at=monday
        ),
        # Supersede: item 1 moves to Monday (the next week), to manager 8, and A changes 9 -> 8.
        make_submission(
            ("A", 8),
            ("B", 3),
            member_id=member,
            item_id=1,
            submitted_at=monday,
            updated_at="2024-03-12T00:00:00Z",
            responsible_id=8,
        ),
        # Retract B of item 1; item 2 becomes skipped; item 3 loses its manager.
        make_submission(
            ("A", 8),
            member_id=member,
            item_id=1,
            submitted_at=monday,
            updated_at="2024-03-13T00:00:00Z",
            responsible_id=8,
        ),
        make_submission(
            ("A", None),
            member_id=member,
            item_id=2,
            submitted_at=sunday,
            updated_at="2024-03-13T00:00:00Z",
        ),
        make_submission(
            ("A", 10),
            member_id=member,
            item_id=3,
            submitted_at=monday,
            updated_at="2024-03-13T00:00:00Z",
            responsible_id=None,
        ),
    ]
    seen = []
    for submission in steps:
        await score_submission(pool, Outbox(), submission)
        await rollup(pool, member)  # the weekly cells equal the answers' sums after every step
        seen.append(await cells(pool, WEEKLY, member))
    week_1, week_2 = date(2024, 3, 4), date(2024, 3, 11)
    assert seen[2] == {
        (10, "A", 5, week_1, 1, 1, 0, 16),
        (10, "B", 5, week_1, 0, 0, 1, 3),
        (10, "A", 5, week_2, 1, 0, 0, 10),
    }
    assert seen[3] == {
        (10, "A", 5, week_1, 0, 1, 0, 7),
        (10, "A", 5, week_2, 1, 0, 0, 10),
        (10, "A", 8, week_2, 0, 1, 0, 8),
        (10, "B", 8, week_2, 0, 0, 1, 3),
    }
    assert seen[-1] == {
        (10, "A", 0, week_2, 1, 0, 0, 10),
        (10, "A", 8, week_2, 0, 1, 0, 8),
    }


async def test_concurrent_submissions_never_deadlock_and_keep_the_rollups_exact(
    pool: asyncpg.Pool, member: str
) -> None:
    """Three versions each of 20 items over the same products, days and managers, all handled at
    once in a shuffled order: every item ends at its newest version, and every rollup equals
    the one rebuilt from the answers. Product names change between versions too."""
    rng = random.Random(8)
    newest: dict[int, dict[str, int | None]] = {}
    submissions = []
    for item in range(1, 21):
        for version in range(3):
            picked = rng.sample(["A", "B", "C", "D"], rng.randint(1, 4))
            scores = [(sku, rng.choice([None, *range(11)])) for sku in sorted(picked)]
            submissions.append(
                make_submission(
                    member_id=member,
                    item_id=item,
                    submitted_at=rng.choice(["2024-03-10T12:00:00Z", "2024-03-11T12:00:00Z"]),
                    updated_at=f"2024-04-0{version + 1}T00:00:00Z",
                    responsible_id=rng.choice([5, 6, None]),
                    answers=[
                        {"sku": sku, "name": f"{sku.lower()} v{rng.randint(1, 2)}", "score": score}
                        for sku, score in scores
                    ],
                )
            )
            newest[item] = dict(scores)
    rng.shuffle(submissions)
    await asyncio.gather(*(score_submission(pool, Outbox(), s) for s in submissions))

    rows = await pool.fetch(
        "SELECT item_id, sku, score FROM scoring_answers WHERE portal = $1 AND is_current", member
    )
    current: dict[int, dict[str, int | None]] = {}
    for row in rows:
        current.setdefault(row["item_id"], {})[row["sku"]] = row["score"]
    assert current == newest
    daily = await rollup(pool, member)
    monthly = await cells(pool, MONTHLY, member)
    weekly = await cells(pool, WEEKLY, member)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await store.rebuild_rollups(conn)
            rebuilt = tuple([await cells(conn, sql, member) for sql in (DAILY, MONTHLY, WEEKLY)])
        finally:
            await transaction.rollback()
    assert rebuilt == (daily, monthly, weekly)


async def test_a_bulk_load_brings_its_rollups_and_names(pg_server: str) -> None:
    at = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    base = {
        "portal": "p-bulk",
        "entity_type_id": 1038,
        "category_id": 12,
        "segment": "Laser",
        "kind": "equipment",
        "scale": "0-10",
        "comment": None,
        "service_request": False,
        "contact_id": 501,
        "responsible_id": 5,
        "submitted_at": at,
        "updated_at": at,
        "day": at.date(),
        "is_current": True,
        "revision": 1,
    }
    rows = [
        {
            **base,
            "answer_id": f"p-bulk:{item}:EQ-A",
            "item_id": item,
            "sku": "EQ-A",
            "product_name": "Laser A",
            "score": score,
            "category": category,
            "source_event_id": uuid.uuid4(),
        }
        for item, score, category in ((1, 9, "promoter"), (2, 3, "detractor"))
    ]
    async with scratch_database(pg_server, scratch_name("test_bulk_load")) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            cells = await store.bulk_load(
                conn, [tuple(row[column] for column in store.ANSWER_COLUMNS) for row in rows]
            )
            segments = await conn.fetch(
                "SELECT portal, category_id, name, kind FROM scoring_segments"
            )
            products = await conn.fetch("SELECT portal, sku, name FROM scoring_products")
            report = await run_report(conn, ReportQuery(by="product"))
        finally:
            await conn.close()
    assert cells == 3  # one cell in each rollup: daily, manager-monthly, manager-weekly
    assert [tuple(r) for r in segments] == [("p-bulk", 12, "Laser", "equipment")]
    assert [tuple(r) for r in products] == [("p-bulk", "EQ-A", "Laser A")]
    assert [row.as_dict() for row in report] == [
        {
            "sku": "EQ-A",
            "name": "Laser A",
            "nps": 0.0,
            "margin": 138.6,
            "few_answers": True,
            "promoters": 1,
            "passives": 0,
            "detractors": 1,
            "answers": 2,
            "avg_score": 6.0,
        }
    ]


@pytest.mark.parametrize(
    ("stored", "incoming", "expected"),
    [
        # (updated_at, revision) of the stored version and of the incoming one.
        ((T0, 0), (T0, 1), store.Item.NEWER),
        ((T0, 1), (T0, 3), store.Item.NEWER),
        ((T0, 1), (T0, 1), store.Item.OUTDATED),
        ((T0, 2), (T0, 1), store.Item.OUTDATED),
        ((T0, 5), (LATER, 0), store.Item.NEWER),
        ((LATER, 0), (T0, 5), store.Item.OUTDATED),
    ],
)
async def test_versions_of_one_second_are_ordered_by_revision(
    pool: asyncpg.Pool,
    member: str,
    stored: tuple[str, int],
    incoming: tuple[str, int],
    expected: store.Item,
) -> None:
    first = make_submission(
        ("LASER", 9), member_id=member, updated_at=stored[0], revision=stored[1]
    )
    then = make_submission(
        ("LASER", 3), member_id=member, updated_at=incoming[0], revision=incoming[1]
    )
    async with pool.acquire() as conn:
        assert await store.begin_item(conn, CONSUMER, first) is store.Item.NEW
        assert await store.begin_item(conn, CONSUMER, then) is expected
        # A redelivery of either is a duplicate, whatever its version.
        assert await store.begin_item(conn, CONSUMER, then) is store.Item.DUPLICATE
        assert await store.begin_item(conn, CONSUMER, first) is store.Item.DUPLICATE


async def test_a_changed_answer_within_the_same_second_is_scored(
    pool: asyncpg.Pool, member: str
) -> None:
    first = make_submission(("LASER", 9), member_id=member, kind="equipment")
    changed = make_submission(("LASER", 3), member_id=member, kind="equipment", revision=1)
    await score_submission(pool, Outbox(), first)
    await score_submission(pool, Outbox(), changed)
    await score_submission(pool, Outbox(), first.model_copy(update={"event_id": uuid.uuid4()}))
    assert {sku: row["score"] for sku, row in (await answers(pool, member)).items()} == {"LASER": 3}
    published = await outbox(pool, first.correlation_id)
    # The answer's revision goes along, for crm_sync to tell its two states of one second apart.
    assert [(body["answer"]["score"], body["answer"]["revision"]) for _, body in published] == [
        (9, 1),
        (3, 2),
    ]
