"""Scoring's migrations applied over data written by the release before them."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg

from services.harness.scratch import scratch_name, with_path
from shared.db import MIGRATIONS_DIR, migrate

DEALS = "0210_scoring_deals.sql"


async def test_items_scored_before_get_the_entity_type_of_their_answers(
    pg_server: str, tmp_path: Path
) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name < DEALS:
            shutil.copy(path, tmp_path / path.name)
    name = scratch_name("test")
    dsn = with_path(pg_server, f"/{name}")
    try:
        await migrate(dsn, tmp_path)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """INSERT INTO scoring_items (portal, item_id, updated_at, event_id)
                   VALUES ('m1', 5, now(), gen_random_uuid())"""
            )
            await conn.execute(
                """INSERT INTO scoring_answers (answer_id, portal, entity_type_id, item_id,
                       category_id, segment, kind, sku, product_name, scale, score, category,
                       service_request, submitted_at, updated_at, day, is_current, revision,
                       source_event_id)
                   VALUES ('m1:5:EQ', 'm1', 1038, 5, 12, 'Laser A', 'equipment', 'EQ', 'Laser',
                       '0-10', 9, 'promoter', false, now(), now(), current_date, true, 1,
                       gen_random_uuid())"""
            )
            assert Path(DEALS).stem in await migrate(dsn)
            items = await conn.fetch("SELECT portal, entity_type_id, item_id FROM scoring_items")
            await conn.execute(
                """INSERT INTO scoring_items (portal, entity_type_id, item_id, updated_at,
                       event_id) VALUES ('m1', 2, 5, now(), gen_random_uuid())"""
            )
            await conn.execute(
                """INSERT INTO scoring_segments (portal, category_id, name, kind)
                   VALUES ('m1', 20, 'After the sale', 'deal')"""
            )
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(with_path(pg_server, "/postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    assert [tuple(row) for row in items] == [("m1", 1038, 5)]
