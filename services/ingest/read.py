"""Ingest's read module (docs/architecture.md, "Tables and their owners"): the names of the
portal's users (`ingest_users`, read by `services.ingest.users`), and what ingest holds, items of
a smart-process category that no segment of the portal YAML maps.

A marketer may add a form (a category of the NPS smart process) on the portal before the YAML
learns it. The hydrator holds such items (`ingest_unmapped_items`) instead of dropping them, and
`services.ingest.release` submits them again once the configuration maps their category. This is
the read side, for `nps unmapped` and the dashboard's Ops page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.db import Conn


@dataclass(frozen=True)
class UnmappedCategory:
    """The held items of one category, waiting for a segment."""

    category_id: int
    items: int
    oldest: datetime
    """The earliest `updatedTime` among them."""
    newest: datetime
    """The latest `updatedTime` among them."""


async def unmapped_summary(conn: Conn, portal: str | None) -> list[UnmappedCategory] | None:
    """The items waiting for a segment, per category, of `portal` (None: of every portal, for
    the operator tools); None when ingest's table is not in this database (not migrated yet)."""
    if await conn.fetchval("SELECT to_regclass('ingest_unmapped_items')") is None:
        return None
    rows = await conn.fetch(
        """SELECT category_id, count(*) AS items, min(updated_at) AS oldest,
                  max(updated_at) AS newest
           FROM ingest_unmapped_items
           WHERE released_at IS NULL AND ($1::text IS NULL OR portal = $1)
           GROUP BY category_id ORDER BY category_id""",
        portal,
    )
    return [
        UnmappedCategory(
            category_id=row["category_id"],
            items=row["items"],
            oldest=row["oldest"],
            newest=row["newest"],
        )
        for row in rows
    ]


async def user_names(conn: Conn, portal: str | None) -> dict[int, str]:
    """The known names of users of `portal` (None: of any portal), by user id."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (user_id) user_id, name FROM ingest_users"
        " WHERE name IS NOT NULL AND ($1::text IS NULL OR portal = $1)"
        " ORDER BY user_id, refreshed_at DESC",
        portal,
    )
    return {row["user_id"]: row["name"] for row in rows}
