"""crm_sync's migrations applied over data written by the release before them."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg

from services.harness.scratch import scratch_name, with_path
from shared.db import MIGRATIONS_DIR, migrate

LEDGER_ITEM = "0410_crm_sync_ledger_item.sql"


async def test_ledger_entries_written_before_get_the_item_id_of_their_answer(
    pg_server: str, tmp_path: Path
) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name < LEDGER_ITEM:
            shutil.copy(path, tmp_path / path.name)
    name = scratch_name("test")
    dsn = with_path(pg_server, f"/{name}")
    entries = {
        ("m1", "m1:9:EQ-LASER-A"): 9,
        ("shop.bitrix24.ru", "shop.bitrix24.ru:1000042:EQ:X"): 1000042,
        ("host:8443", "host:8443:17:EQ-CRYO-B"): 17,
        ("m2", "not an answer id"): 0,
    }
    try:
        await migrate(dsn, tmp_path)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.executemany(
                """INSERT INTO crm_field_ledger (portal, contact_id, field, owned_value, answer_id,
                       submitted_at, updated_at, action_id)
                   VALUES ($1, 7, 'UF_SCORE', '"9"', $2, now(), now(), 'a1')""",
                list(entries),
            )
            assert Path(LEDGER_ITEM).stem in await migrate(dsn)
            rows = await conn.fetch("SELECT portal, answer_id, item_id FROM crm_field_ledger")
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(with_path(pg_server, "/postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    assert {(r["portal"], r["answer_id"]): r["item_id"] for r in rows} == entries
