"""Scoring's read module: what the CLI, the dashboard, the ops tooling and the benchmarks read of
scoring's tables (docs/architecture.md, "Tables and their owners").

The NPS reports themselves are `services.scoring.report` (`run_report`, `ReportQuery`, the
periods), exported here; this module adds the rest others read: the filter choices, the latest
answers that need attention, every current answer (the all-ratings list, its CSV export and
its per-theme counts), and the scored items and answers of a portal.

Every value is a `$n` parameter; the dashboard's queries run read-only with JIT off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.scoring.nps import DEFAULT_MIN_ANSWERS
from services.scoring.periods import GRANULARITIES, Granularity, Period, bucket_start
from services.scoring.periods import label as period_label
from services.scoring.report import (
    GroupBy,
    ReportQuery,
    filter_conditions,
    named_managers,
    render_table,
    run_report,
    score_distribution,
)
from shared.db import Conn
from shared.events import DEAL_ENTITY_TYPE_ID

__all__ = [
    "DEFAULT_MIN_ANSWERS",
    "GRANULARITIES",
    "Choices",
    "CurrentAnswer",
    "Granularity",
    "GroupBy",
    "ItemRef",
    "Period",
    "ProductChoice",
    "RatingsQuery",
    "ReportQuery",
    "all_ratings",
    "answer_ids",
    "attention",
    "bucket_start",
    "choices",
    "current_answers",
    "last_scored_at",
    "like_pattern",
    "named_managers",
    "period_label",
    "ratings",
    "ratings_count",
    "render_table",
    "run_report",
    "score_distribution",
    "scored_items",
    "theme_counts",
]

_ANSWERED = "d.promoters + d.passives + d.detractors > 0"


@dataclass(frozen=True)
class ProductChoice:
    sku: str
    name: str
    segments: tuple[str, ...]
    """The names of the segments it has answers in."""
    kinds: tuple[str, ...]
    """The kinds of those segments (equipment, cosmetics), each once."""


@dataclass(frozen=True)
class Choices:
    """What reports can be filtered by: the values that have answers."""

    portals: tuple[str, ...]
    segments: tuple[tuple[int, str], ...]
    """(category id, name)"""
    products: tuple[ProductChoice, ...]
    managers: tuple[int, ...]


async def choices(conn: Conn, portal: str | None) -> Choices:
    """Portals, segments, products (with their segments) and managers that have answers."""
    where = " AND d.portal = $1" if portal is not None else ""
    params = [portal] if portal is not None else []
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        portals = await conn.fetch("SELECT DISTINCT portal FROM scoring_segments ORDER BY portal")
        segments = await conn.fetch(
            "SELECT DISTINCT ON (d.category_id) d.category_id, d.name"  # noqa: S608 - fixed text
            f" FROM scoring_segments d WHERE true{where} ORDER BY d.category_id, d.portal",
            *params,
        )
        products = await conn.fetch(
            "SELECT DISTINCT ON (d.sku) d.sku, d.name FROM scoring_products d"  # noqa: S608
            f" WHERE true{where} ORDER BY d.sku, d.portal",
            *params,
        )
        placements = await conn.fetch(
            "SELECT DISTINCT p.sku, s.name, s.kind FROM"  # noqa: S608 - fixed text
            " (SELECT DISTINCT d.portal, d.category_id, d.sku FROM scoring_daily d"
            f"  WHERE {_ANSWERED}{where}) p"
            " JOIN scoring_segments s ON s.portal = p.portal AND s.category_id = p.category_id"
            " ORDER BY p.sku, s.name",
            *params,
        )
        managers = await conn.fetch(
            "SELECT DISTINCT d.responsible_id FROM scoring_manager_monthly d"  # noqa: S608
            f" WHERE d.responsible_id > 0 AND {_ANSWERED}{where} ORDER BY d.responsible_id",
            *params,
        )
    segment_names: dict[str, list[str]] = {}
    kinds: dict[str, list[str]] = {}
    for row in placements:
        segment_names.setdefault(row["sku"], []).append(row["name"])
        if row["kind"] not in kinds.setdefault(row["sku"], []):
            kinds[row["sku"]].append(row["kind"])
    return Choices(
        portals=tuple(row["portal"] for row in portals),
        segments=tuple((row["category_id"], row["name"]) for row in segments),
        products=tuple(
            ProductChoice(
                sku=row["sku"],
                name=row["name"],
                segments=tuple(segment_names.get(row["sku"], ())),
                kinds=tuple(kinds.get(row["sku"], ())),
            )
            for row in products
        ),
        managers=tuple(row["responsible_id"] for row in managers),
    )


async def attention(
    conn: Conn,
    *,
    portal: str | None,
    segment: str | None,
    product: str | None,
    manager: int | None,
    start: date | None,
    end: date | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The latest current detractors and service requests (a ticked service checkbox counts
    even without a score), newest first (as crm_sync orders answers: submitted, updated, then the
    later item of the same second; one item's products by sku), narrowed by the filters."""
    conditions = ["d.is_current", "(d.category = 'detractor' OR d.service_request)"]
    params: list[Any] = []
    filter_conditions(
        conditions,
        params,
        portal=portal,
        segment=segment,
        product=product,
        manager=manager,
        day="d.day",
        start=start,
        end=end,
    )
    params.append(limit)
    sql = (
        "SELECT d.answer_id, d.entity_type_id, d.item_id, d.segment, d.sku,"  # noqa: S608 - fixed fragments, values are $n
        " d.product_name, d.score, d.category, d.comment, d.service_request, d.contact_id,"
        " d.responsible_id, d.submitted_at FROM scoring_answers d"
        f" WHERE {' AND '.join(conditions)}"
        " ORDER BY d.submitted_at DESC, d.updated_at DESC, d.item_id DESC, d.answer_id"
        f" LIMIT ${len(params)}"
    )
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        return [dict(row) for row in await conn.fetch(sql, *params)]


ItemRef = tuple[int, int]
"""A survey item as scoring knows it: (entity type, item id); NPS deals are entity type 2, and a
deal and a smart-process item may share an id."""


def _refs(items: Sequence[ItemRef] | None) -> tuple[list[int] | None, list[int] | None]:
    if items is None:
        return None, None
    return [entity for entity, _ in items], [item for _, item in items]


async def scored_items(
    conn: Conn, portal: str, items: Sequence[ItemRef] | None = None
) -> set[ItemRef]:
    """The survey items of `portal` scored so far (among `items` when given)."""
    rows = await conn.fetch(
        """SELECT entity_type_id, item_id FROM scoring_items
           WHERE portal = $1 AND ($2::integer[] IS NULL OR (entity_type_id, item_id) IN
                 (SELECT * FROM unnest($2::integer[], $3::bigint[])))""",
        portal,
        *_refs(items),
    )
    return {(row["entity_type_id"], row["item_id"]) for row in rows}


async def answer_ids(conn: Conn, portal: str, items: Sequence[ItemRef] | None = None) -> list[str]:
    """The answers (one per product) of the scored items of `portal` (of `items` when given)."""
    rows = await conn.fetch(
        """SELECT answer_id FROM scoring_answers
           WHERE portal = $1 AND ($2::integer[] IS NULL OR (entity_type_id, item_id) IN
                 (SELECT * FROM unnest($2::integer[], $3::bigint[])))""",
        portal,
        *_refs(items),
    )
    return [row["answer_id"] for row in rows]


async def last_scored_at(conn: Conn, portal: str | None) -> datetime | None:
    """When scoring last applied an item of `portal` (None: of any portal); None before the
    first."""
    at: datetime | None = await conn.fetchval(
        "SELECT max(applied_at) FROM scoring_items WHERE $1::text IS NULL OR portal = $1", portal
    )
    return at


@dataclass(frozen=True)
class CurrentAnswer:
    """A current scored answer: what decides the CRM actions it calls for."""

    answer_id: str
    kind: str
    category: str
    service_request: bool
    contact_id: int | None
    category_id: int


async def current_answers(conn: Conn, portal: str) -> list[CurrentAnswer]:
    """The current answers of `portal` that have a score."""
    rows = await conn.fetch(
        """SELECT answer_id, kind, category, service_request, contact_id, category_id
           FROM scoring_answers WHERE portal = $1 AND is_current AND score IS NOT NULL""",
        portal,
    )
    return [
        CurrentAnswer(
            answer_id=row["answer_id"],
            kind=row["kind"],
            category=row["category"],
            service_request=row["service_request"],
            contact_id=row["contact_id"],
            category_id=row["category_id"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class DealItems:
    """The survey items of one deal (the deal card's tab inside a portal): NPS deals (entity
    type 2: the deal itself, or those its surveys created) and smart-process items, by id."""

    deals: tuple[int, ...] = ()
    items: tuple[int, ...] = ()


@dataclass(frozen=True)
class RatingsQuery:
    """Which current answers the all-ratings list shows: the report filters, and a category
    (`none`: not scored), answers with a comment only, a text the comment contains and word lists
    of which the comment contains any (a theme). Texts match case-insensitively, as substrings."""

    portal: str | None = None
    segment: str | None = None
    product: str | None = None
    manager: int | None = None
    start: date | None = None
    end: date | None = None
    category: str | None = None
    has_comment: bool = False
    search: str | None = None
    words: tuple[str, ...] | None = None
    contact: int | None = None
    """One contact's answers only (the contact card's tab of the dashboard inside a portal)."""
    deal: DealItems | None = None
    """One deal's answers only: those of its survey items (the deal card's tab)."""


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching any text that contains `text` (its wildcards taken literally)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _ratings_where(query: RatingsQuery, params: list[Any], *, themed: bool = True) -> str:
    conditions = ["d.is_current"]
    filter_conditions(
        conditions,
        params,
        portal=query.portal,
        segment=query.segment,
        product=query.product,
        manager=query.manager,
        day="d.day",
        start=query.start,
        end=query.end,
    )

    def add(template: str, value: Any) -> None:
        params.append(value)
        conditions.append(template.format(f"${len(params)}"))

    if query.category == "none":
        conditions.append("d.category IS NULL")
    elif query.category is not None:
        add("d.category = {}", query.category)
    if query.has_comment:
        conditions.append("btrim(coalesce(d.comment, '')) <> ''")
    if query.search is not None:
        add("d.comment ILIKE {}", like_pattern(query.search))
    if query.contact is not None:
        add("d.contact_id = {}", query.contact)
    if query.deal is not None:
        params.extend([DEAL_ENTITY_TYPE_ID, list(query.deal.deals), list(query.deal.items)])
        deal, deals, items = (f"${len(params) - n}" for n in (2, 1, 0))
        conditions.append(
            f"((d.entity_type_id = {deal} AND d.item_id = ANY({deals}::bigint[]))"
            f" OR (d.entity_type_id <> {deal} AND d.item_id = ANY({items}::bigint[])))"
        )
    if themed and query.words is not None:
        add("d.comment ILIKE ANY({}::text[])", [like_pattern(w) for w in query.words])
    return " AND ".join(conditions)


_RATING_COLUMNS = (
    "d.answer_id, d.portal, d.entity_type_id, d.item_id, d.segment, d.sku, d.product_name, d.score,"
    " d.category, d.comment, d.service_request, d.contact_id, d.responsible_id, d.submitted_at"
)
_RATINGS_ORDER = " ORDER BY d.submitted_at DESC, d.updated_at DESC, d.item_id DESC, d.answer_id"


async def ratings(
    conn: Conn, query: RatingsQuery, *, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """One page of the current answers `query` selects, newest first (as `attention` orders)."""
    params: list[Any] = []
    where = _ratings_where(query, params)
    params.extend([limit, offset])
    sql = (
        f"SELECT {_RATING_COLUMNS} FROM scoring_answers d WHERE {where}{_RATINGS_ORDER}"  # noqa: S608 - fixed fragments, values are $n
        f" LIMIT ${len(params) - 1} OFFSET ${len(params)}"
    )
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        return [dict(row) for row in await conn.fetch(sql, *params)]


async def all_ratings(
    conn: Conn, query: RatingsQuery, *, batch: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """Every current answer `query` selects, in the order of `ratings`, read through a cursor
    (`batch` rows at a time) in one read-only transaction: one snapshot, however many rows."""
    params: list[Any] = []
    where = _ratings_where(query, params)
    sql = f"SELECT {_RATING_COLUMNS} FROM scoring_answers d WHERE {where}{_RATINGS_ORDER}"  # noqa: S608 - fixed fragments, values are $n
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        async for row in conn.cursor(sql, *params, prefetch=batch):
            yield dict(row)


async def ratings_count(conn: Conn, query: RatingsQuery) -> int:
    """How many current answers `query` selects."""
    params: list[Any] = []
    where = _ratings_where(query, params)
    sql = f"SELECT count(*) FROM scoring_answers d WHERE {where}"  # noqa: S608 - fixed fragments, values are $n
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        count: int = await conn.fetchval(sql, *params)
    return count


async def theme_counts(
    conn: Conn, query: RatingsQuery, themes: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Per theme (name -> its words), how many of the answers `query` selects (its own theme
    words left aside) have a comment containing any of the theme's words."""
    if not themes:
        return {}
    params: list[Any] = []
    where = _ratings_where(query, params, themed=False)
    counts = []
    for words in themes.values():
        params.append([like_pattern(w) for w in words])
        counts.append(f"count(*) FILTER (WHERE d.comment ILIKE ANY(${len(params)}::text[]))")
    sql = f"SELECT {', '.join(counts)} FROM scoring_answers d WHERE {where}"  # noqa: S608 - fixed fragments, values are $n
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        (row,) = await conn.fetch(sql, *params)
    return {name: row[i] for i, name in enumerate(themes)}
