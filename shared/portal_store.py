"""Each portal's configuration in application mode: the portal YAML of one installed portal,
kept as text in `portal_configs` (migration 0025; owned here, like the outbox, since every
service reads it) and validated exactly like the file (`parse_portal_yaml`) before it is stored.
A portal without a row runs on the deployment's portal YAML as its template (docs/app.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.db import Conn
from shared.portal_config import PortalConfig, parse_portal_yaml


@dataclass(frozen=True)
class StoredConfig:
    portal: str
    text: str
    config: PortalConfig
    version: int
    updated_at: datetime
    updated_by: str | None


@dataclass(frozen=True)
class StoredText:
    """A stored configuration as it is, not validated: one saved under rules that have since
    become stricter is still shown to its editors, so they can fix it."""

    portal: str
    text: str
    version: int
    updated_at: datetime
    updated_by: str | None


async def load(conn: Conn, portal: str) -> StoredConfig | None:
    """`portal`'s stored configuration; None when it has none (the template applies);
    `ConfigError` when it no longer validates."""
    row = await _row(conn, portal)
    return None if row is None else _stored(row)


async def load_text(conn: Conn, portal: str) -> StoredText | None:
    """`portal`'s stored configuration as text, valid or not; None when it has none."""
    row = await _row(conn, portal)
    if row is None:
        return None
    return StoredText(
        portal=row["portal"],
        text=row["yaml"],
        version=row["version"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def _row(conn: Conn, portal: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT portal, yaml, version, updated_at, updated_by FROM portal_configs"
        " WHERE portal = $1",
        portal,
    )
    return row


async def load_all(conn: Conn) -> dict[str, StoredConfig]:
    """Every stored configuration by portal key."""
    rows = await conn.fetch(
        "SELECT portal, yaml, version, updated_at, updated_by FROM portal_configs"
    )
    return {row["portal"]: _stored(row) for row in rows}


async def save(
    conn: Conn, portal: str, text: str, *, by: str | None, expected_version: int | None
) -> StoredConfig:
    """Validate `text` and store it as `portal`'s configuration; raises `ConfigError` naming
    what is wrong (nothing stored). `expected_version`: the version the editor started from
    (None: a new row); a concurrent edit raises `StaleConfigError` instead of overwriting it."""
    parse_portal_yaml(text, source=f"portal {portal}'s configuration")
    row = await conn.fetchrow(
        """INSERT INTO portal_configs AS c (portal, yaml, updated_by) VALUES ($1, $2, $3)
           ON CONFLICT (portal) DO UPDATE
               SET yaml = excluded.yaml, version = c.version + 1, updated_at = now(),
                   updated_by = excluded.updated_by
               WHERE c.version = $4
           RETURNING portal, yaml, version, updated_at, updated_by""",
        portal,
        text,
        by,
        expected_version,
    )
    if row is None:
        raise StaleConfigError(
            f"portal {portal}'s configuration was changed meanwhile (not version"
            f" {expected_version} any more): reload it and apply the change again"
        )
    return _stored(row)


class StaleConfigError(ValueError):
    """The configuration changed since the editor read it."""


def _stored(row: asyncpg.Record) -> StoredConfig:
    portal: str = row["portal"]
    text: str = row["yaml"]
    return StoredConfig(
        portal=portal,
        text=text,
        config=parse_portal_yaml(text, source=f"portal {portal}'s stored configuration"),
        version=row["version"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )
