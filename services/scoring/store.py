"""PostgreSQL persistence of scored answers (migrations 0200, 0202, 0230): every function runs
inside the caller's transaction, so the claim, the item's version, answers, rollups, names and
outbox commit together. A submission is three statements: `begin_item`, `load_answers` (only for
a newer version of a stored item) and `write_change`.

Every submission takes its locks in the same order, so concurrent submissions never deadlock: the
item first, then the rows `write_change` touches. The parts of that one statement run in an order
fixed by its plan (the same for every submission), and each part takes its rows sorted by key. A
deadlock with a replica of an earlier release during a rolling deploy (it took its locks in
another order) is retried like any transient error.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Sequence
from typing import Any

from services.scoring.answers import AnswerRow, Change, RollupKey
from services.scoring.nps import NpsAggregate
from shared.db import Conn
from shared.events import FormSubmitted
from shared.outbox import Outbox, QueuingStatement, StatementBuilder

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
# Built only from the constant column names above (S608 does not apply).
_SELECT_ANSWERS = (
    f"SELECT {', '.join(ANSWER_COLUMNS)} FROM scoring_answers"  # noqa: S608
    " WHERE portal = $1 AND entity_type_id = $2 AND item_id = $3"
)


class Item(enum.Enum):
    """What `begin_item` found."""

    DUPLICATE = "duplicate"
    """This message was handled before (a redelivery)."""
    OUTDATED = "outdated"
    """The stored version of the item is this one or newer."""
    NEW = "new"
    """The item's first version: it has no stored answers."""
    NEWER = "newer"
    """A newer version of a stored item."""


_BEGIN_ITEM = """
WITH claimed AS (
    INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2)
    ON CONFLICT DO NOTHING RETURNING 1),
item AS (
    INSERT INTO scoring_items AS i (portal, entity_type_id, item_id, updated_at, revision,
                                    event_id)
    SELECT $3, $6, $4, $5, $7, $2 FROM claimed
    ON CONFLICT (portal, entity_type_id, item_id) DO UPDATE
        SET updated_at = EXCLUDED.updated_at, revision = EXCLUDED.revision,
            event_id = EXCLUDED.event_id, applied_at = now()
        WHERE (i.updated_at, i.revision) < (EXCLUDED.updated_at, EXCLUDED.revision)
    RETURNING xmax = 0 AS inserted)
SELECT EXISTS (SELECT 1 FROM claimed) AS claimed, (SELECT inserted FROM item) AS inserted"""


async def begin_item(conn: Conn, consumer: str, submission: FormSubmitted) -> Item:
    """Claim the message for `consumer` and record this version of the survey item, locking it
    until the transaction ends, in one statement.

    Versions are ordered by (`updated_at`, `revision`): ingest gives the later of two states
    within one second (Bitrix24 keeps seconds) a higher revision. An equal pair is the same
    version. A newer version's stored answers are read after this (`load_answers`), under the
    lock.
    """
    row = await conn.fetchrow(
        _BEGIN_ITEM,
        consumer,
        submission.event_id,
        submission.portal.key,
        submission.item_id,
        submission.updated_at,
        submission.entity_type_id,
        submission.revision,
    )
    assert row is not None
    if not row["claimed"]:
        return Item.DUPLICATE
    if row["inserted"] is None:
        return Item.OUTDATED
    return Item.NEW if row["inserted"] else Item.NEWER


async def load_answers(
    conn: Conn, portal: str, entity_type_id: int, item_id: int
) -> dict[str, AnswerRow]:
    """The stored answers of one survey item (current and retracted), by answer id."""
    rows = await conn.fetch(_SELECT_ANSWERS, portal, entity_type_id, item_id)
    return {
        row["answer_id"]: AnswerRow(
            **{column: row[column] for column in ANSWER_COLUMNS if column != "is_current"},
            current=row["is_current"],
        )
        for row in rows
    }


def _rollup(table: str, keys: tuple[str, ...], key_values: tuple[str, ...]) -> str:
    """CTE adding the cells of `delta` to a rollup, `keys` computed as `key_values`: rows are
    created at zero when missing, cells that sum to zero are left out, and rows are locked in key
    order so that concurrent submissions never deadlock."""
    columns = (*keys, "promoters", "passives", "detractors", "score_sum")
    by = ", ".join(str(n) for n in range(1, len(keys) + 1))
    return f"""{table} AS (
    INSERT INTO {table} AS r ({", ".join(columns)})
    SELECT {", ".join(key_values)}, sum(promoters), sum(passives), sum(detractors), sum(score_sum)
    FROM delta GROUP BY {by}
    HAVING (sum(promoters), sum(passives), sum(detractors), sum(score_sum)) <> (0, 0, 0, 0)
    ORDER BY {by}
    ON CONFLICT ({", ".join(keys)}) DO UPDATE SET
        promoters = r.promoters + EXCLUDED.promoters,
        passives = r.passives + EXCLUDED.passives,
        detractors = r.detractors + EXCLUDED.detractors,
        score_sum = r.score_sum + EXCLUDED.score_sum)"""  # noqa: S608 - names are constants


_KEY = ("portal", "category_id", "sku")
_MONTH = "date_trunc('month', day::timestamp)::date"
_WEEK = "date_trunc('week', day::timestamp)::date"
_COLUMNS = ", ".join(ANSWER_COLUMNS)
_MANAGER = "coalesce(responsible_id, 0)"
_TABLES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("scoring_daily", ("day",), ("day",)),
    ("scoring_manager_monthly", ("responsible_id", "month"), (_MANAGER, _MONTH)),
    ("scoring_manager_weekly", ("responsible_id", "week"), (_MANAGER, _WEEK)),
)
"""Each rollup: its table, its key columns after the product's, and how they are computed from
an answer (or a delta cell, whose `responsible_id` is never NULL)."""
_ROLLUPS = ",\n".join(
    _rollup(table, (*_KEY, *keys), (*_KEY, *values)) for table, keys, values in _TABLES
)


def _write_statement() -> QueuingStatement:
    """Built only from the constant names above and placeholders (S608 does not apply)."""
    b = StatementBuilder()
    portal, category_id, segment, kind, skus, names, answers, delta = b.params(
        "portal", "category_id", "segment", "kind", "skus", "names", "answers", "delta"
    )
    return b.build(f"""
WITH segment AS (
    INSERT INTO scoring_segments (portal, category_id, name, kind)
    SELECT {portal}, {category_id}, {segment}, {kind} WHERE NOT EXISTS (
        SELECT 1 FROM scoring_segments
        WHERE portal = {portal} AND category_id = {category_id} AND name = {segment}
          AND kind = {kind})
    ON CONFLICT (portal, category_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind),
products AS (
    INSERT INTO scoring_products (portal, sku, name)
    SELECT {portal}, p.sku, p.name FROM unnest({skus}::text[], {names}::text[]) AS p (sku, name)
    WHERE NOT EXISTS (
        SELECT 1 FROM scoring_products k
        WHERE k.portal = {portal} AND k.sku = p.sku AND k.name = p.name)
    ORDER BY p.sku
    ON CONFLICT (portal, sku) DO UPDATE SET name = EXCLUDED.name),
answers AS (
    INSERT INTO scoring_answers ({_COLUMNS})
    SELECT {_COLUMNS} FROM jsonb_populate_recordset(NULL::scoring_answers, {answers}::jsonb)
    ORDER BY answer_id
    ON CONFLICT (answer_id) DO UPDATE SET
    {", ".join(f"{column} = EXCLUDED.{column}" for column in ANSWER_COLUMNS[1:])}),
delta AS (
    SELECT * FROM jsonb_to_recordset({delta}::jsonb) AS d (
        portal text, category_id integer, sku text, responsible_id bigint, day date,
        promoters integer, passives integer, detractors integer, score_sum bigint)),
{_ROLLUPS},
{b.queue()}
SELECT 1""")  # noqa: S608


_WRITE = _write_statement()


def _answer(row: AnswerRow) -> dict[str, Any]:
    return {
        column: row.current if column == "is_current" else getattr(row, column)
        for column in ANSWER_COLUMNS
    }


def _cell(key: RollupKey, value: NpsAggregate) -> dict[str, Any]:
    return {**dataclasses.asdict(key), **dataclasses.asdict(value)}


async def write_change(
    outbox: Outbox, conn: Conn, submission: FormSubmitted, change: Change
) -> None:
    """Store what `submission` changes, in one statement: the latest segment and product names
    (rows are only touched when a name changed), the answer rows, the daily, manager-monthly and
    manager-weekly rollups (`change.rollup` summed into each) and the `nps.scored` events."""
    names = {answer.sku: answer.name for answer in submission.answers}
    await outbox.execute(
        conn,
        _WRITE,
        change.events,
        portal=submission.portal.key,
        category_id=submission.category_id,
        segment=submission.segment,
        kind=submission.kind,
        skus=list(names),
        names=list(names.values()),
        answers=json.dumps([_answer(row) for row in change.rows], default=str),
        delta=json.dumps([_cell(k, v) for k, v in change.rollup.items()], default=str),
    )


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


_REBUILDS = tuple(
    _rebuild(table, (*_KEY, *keys), (*_KEY, *values)) for table, keys, values in _TABLES
)


async def rebuild_rollups(conn: Conn) -> int:
    """Recompute every rollup from the answers (after a bulk load); returns the cells written."""
    await conn.execute("TRUNCATE scoring_daily, scoring_manager_monthly, scoring_manager_weekly")
    statuses = [await conn.execute(statement) for statement in _REBUILDS]
    return sum(int(status.split()[-1]) for status in statuses)


async def bulk_load(conn: Conn, answers: Iterable[Sequence[Any]]) -> int:
    """Load answer rows (values in `ANSWER_COLUMNS` order) in bulk (COPY), then rebuild the
    rollups and the segment and product names from every answer; returns the rollup cells."""
    await conn.copy_records_to_table("scoring_answers", records=answers, columns=ANSWER_COLUMNS)
    async with conn.transaction():
        cells = await rebuild_rollups(conn)
        await conn.execute(
            """INSERT INTO scoring_segments (portal, category_id, name, kind)
               SELECT DISTINCT portal, category_id, segment, kind FROM scoring_answers"""
        )
        await conn.execute(
            """INSERT INTO scoring_products (portal, sku, name)
               SELECT DISTINCT portal, sku, product_name FROM scoring_answers"""
        )
    return cells
