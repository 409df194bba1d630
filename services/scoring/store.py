"""PostgreSQL persistence of scored answers (migrations 0200, 0202): every function runs inside the
caller's transaction, so answers, rollup, names, outbox and `claim()` commit together.

Locks are always taken in one order (the item, then names, then rollup cells sorted by key) so that
concurrent submissions never deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.scoring.answers import AnswerRow, RollupKey
from services.scoring.nps import NpsAggregate
from services.scoring.periods import bucket_start
from shared.events import FormSubmitted

Conn = asyncpg.Connection | PoolConnectionProxy

ANSWER_COLUMNS = (
    "answer_id",
    "portal",
    "entity_type_id",
    "item_id",
    "category_id",
    "segment",
    "kind",
    "sku",
    "product_name",
    "scale",
    "score",
    "category",
    "comment",
    "service_request",
    "contact_id",
    "responsible_id",
    "submitted_at",
    "updated_at",
    "day",
    "is_current",
    "revision",
    "source_event_id",
)
# Both statements are built only from the constant column names above (S608 does not apply).
_UPSERT_ANSWER = (
    f"INSERT INTO scoring_answers ({', '.join(ANSWER_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(ANSWER_COLUMNS) + 1))})"
    " ON CONFLICT (answer_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in ANSWER_COLUMNS[1:])
)
_SELECT_ANSWERS = (
    f"SELECT {', '.join(ANSWER_COLUMNS)} FROM scoring_answers"  # noqa: S608
    " WHERE portal = $1 AND item_id = $2"
)


async def advance_item(conn: Conn, submission: FormSubmitted) -> bool:
    """Lock the survey item and record this version; False when it is not newer than the stored one.

    An equal `updated_at` is the same version (a webhook and the catch-up sweep can both submit it).
    """
    portal, item_id = submission.portal.key, submission.item_id
    inserted = await conn.fetchval(
        """INSERT INTO scoring_items (portal, item_id, updated_at, event_id)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        portal,
        item_id,
        submission.updated_at,
        submission.event_id,
    )
    if inserted:
        return True
    stored = await conn.fetchval(
        "SELECT updated_at FROM scoring_items WHERE portal = $1 AND item_id = $2 FOR UPDATE",
        portal,
        item_id,
    )
    if stored >= submission.updated_at:
        return False
    await conn.execute(
        """UPDATE scoring_items SET updated_at = $3, event_id = $4, applied_at = now()
           WHERE portal = $1 AND item_id = $2""",
        portal,
        item_id,
        submission.updated_at,
        submission.event_id,
    )
    return True


async def load_answers(conn: Conn, portal: str, item_id: int) -> dict[str, AnswerRow]:
    """The stored answers of one survey item (current and retracted), by answer id."""
    rows = await conn.fetch(_SELECT_ANSWERS, portal, item_id)
    return {
        row["answer_id"]: AnswerRow(
            **{column: row[column] for column in ANSWER_COLUMNS if column != "is_current"},
            current=row["is_current"],
        )
        for row in rows
    }


async def save_answers(conn: Conn, rows: list[AnswerRow]) -> None:
    """Insert or replace answer rows."""
    await conn.executemany(
        _UPSERT_ANSWER,
        [
            tuple(
                row.current if column == "is_current" else getattr(row, column)
                for column in ANSWER_COLUMNS
            )
            for row in sorted(rows, key=lambda r: r.answer_id)
        ],
    )


async def remember_names(conn: Conn, submission: FormSubmitted) -> None:
    """Keep the latest segment and product names; rows are only touched when a name changed."""
    portal = submission.portal.key
    segment = await conn.fetchrow(
        "SELECT name, kind FROM scoring_segments WHERE portal = $1 AND category_id = $2",
        portal,
        submission.category_id,
    )
    if segment is None or (segment["name"], segment["kind"]) != (
        submission.segment,
        submission.kind,
    ):
        await conn.execute(
            """INSERT INTO scoring_segments (portal, category_id, name, kind)
               VALUES ($1, $2, $3, $4) ON CONFLICT (portal, category_id)
               DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind""",
            portal,
            submission.category_id,
            submission.segment,
            submission.kind,
        )
    wanted = {answer.sku: answer.name for answer in submission.answers}
    known = await conn.fetch(
        "SELECT sku, name FROM scoring_products WHERE portal = $1 AND sku = ANY($2::text[])",
        portal,
        list(wanted),
    )
    await _save_products(conn, portal, wanted, {row["sku"]: row["name"] for row in known})


async def _save_products(
    conn: Conn, portal: str, wanted: Mapping[str, str], known: Mapping[str, str]
) -> None:
    changed = sorted((sku, name) for sku, name in wanted.items() if known.get(sku) != name)
    if not changed:
        return
    await conn.executemany(
        """INSERT INTO scoring_products (portal, sku, name) VALUES ($1, $2, $3)
           ON CONFLICT (portal, sku) DO UPDATE SET name = EXCLUDED.name""",
        [(portal, sku, name) for sku, name in changed],
    )


def _upsert(table: str, keys: tuple[str, ...]) -> str:
    """Add a cell's counts to a rollup row (created at zero when missing)."""
    columns = (*keys, "promoters", "passives", "detractors", "score_sum")
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"""
    INSERT INTO {table} AS r ({", ".join(columns)}) VALUES ({values})
    ON CONFLICT ({", ".join(keys)}) DO UPDATE SET
        promoters = r.promoters + EXCLUDED.promoters,
        passives = r.passives + EXCLUDED.passives,
        detractors = r.detractors + EXCLUDED.detractors,
        score_sum = r.score_sum + EXCLUDED.score_sum"""  # noqa: S608 - names are module constants


_KEY = ("portal", "category_id", "sku")
_UPSERT_DAILY = _upsert("scoring_daily", (*_KEY, "day"))
_UPSERT_MANAGER_MONTHLY = _upsert("scoring_manager_monthly", (*_KEY, "responsible_id", "month"))
_UPSERT_MANAGER_WEEKLY = _upsert("scoring_manager_weekly", (*_KEY, "responsible_id", "week"))


def _rows(cells: dict[tuple[Any, ...], NpsAggregate]) -> list[tuple[Any, ...]]:
    """Upsert arguments in key order (so concurrent writers never deadlock), zero cells left out."""
    return [
        (*key, value.promoters, value.passives, value.detractors, value.score_sum)
        for key, value in sorted(cells.items())
        if value != NpsAggregate()
    ]


async def apply_rollup(conn: Conn, delta: Mapping[RollupKey, NpsAggregate]) -> None:
    """Add `delta` (cells of the finest grain) to the daily, manager-monthly and manager-weekly
    rollups (always in that table order, each in key order)."""
    daily: dict[tuple[Any, ...], NpsAggregate] = {}
    monthly: dict[tuple[Any, ...], NpsAggregate] = {}
    weekly: dict[tuple[Any, ...], NpsAggregate] = {}
    for key, value in delta.items():
        product = (key.portal, key.category_id, key.sku)
        day_key = (*product, key.day)
        month_key = (*product, key.responsible_id, bucket_start(key.day, "month"))
        week_key = (*product, key.responsible_id, bucket_start(key.day, "week"))
        daily[day_key] = daily.get(day_key, NpsAggregate()) + value
        monthly[month_key] = monthly.get(month_key, NpsAggregate()) + value
        weekly[week_key] = weekly.get(week_key, NpsAggregate()) + value
    if rows := _rows(daily):
        await conn.executemany(_UPSERT_DAILY, rows)
    if rows := _rows(monthly):
        await conn.executemany(_UPSERT_MANAGER_MONTHLY, rows)
    if rows := _rows(weekly):
        await conn.executemany(_UPSERT_MANAGER_WEEKLY, rows)


def _rebuild(table: str, keys: tuple[str, ...], key_values: tuple[str, ...]) -> str:
    """Fill a rollup from the current scored answers: `keys` computed as `key_values`."""
    columns = (*keys, "promoters", "passives", "detractors", "score_sum")
    return f"""
    INSERT INTO {table} ({", ".join(columns)})
    SELECT {", ".join(key_values)},
           count(*) FILTER (WHERE category = 'promoter'),
           count(*) FILTER (WHERE category = 'passive'),
           count(*) FILTER (WHERE category = 'detractor'),
           sum(score)
    FROM scoring_answers
    WHERE is_current AND score IS NOT NULL
    GROUP BY {", ".join(str(n) for n in range(1, len(keys) + 1))}"""  # noqa: S608 - constants


_MANAGER = ("portal", "category_id", "sku", "coalesce(responsible_id, 0)")
_REBUILDS = (
    _rebuild("scoring_daily", (*_KEY, "day"), (*_KEY, "day")),
    _rebuild(
        "scoring_manager_monthly",
        (*_KEY, "responsible_id", "month"),
        (*_MANAGER, "date_trunc('month', day::timestamp)::date"),
    ),
    _rebuild(
        "scoring_manager_weekly",
        (*_KEY, "responsible_id", "week"),
        (*_MANAGER, "date_trunc('week', day::timestamp)::date"),
    ),
)


async def rebuild_rollups(conn: Conn) -> int:
    """Recompute every rollup from the answers (after a bulk load); returns the cells written."""
    await conn.execute("TRUNCATE scoring_daily, scoring_manager_monthly, scoring_manager_weekly")
    statuses = [await conn.execute(statement) for statement in _REBUILDS]
    return sum(int(status.split()[-1]) for status in statuses)
