"""The migrations that give per-portal rows a portal key (issue #22), applied over rows written by
the release before them: router_actions, crm_survey_items, ops_dlq_discards."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.harness.scratch import scratch_name, with_path
from shared.db import MIGRATIONS_DIR, migrate

KEYED = (
    "0305_router_actions_portal",
    "0480_crm_sync_survey_items_portal",
    "0905_ops_discards_portal",
    "0910_ops_discards_portal_key",
)


@pytest.fixture
async def before(pg_server: str, tmp_path: Path) -> AsyncIterator[str]:
    """A scratch database of the release before these migrations (every other one applied)."""
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.stem not in KEYED:
            shutil.copy(path, tmp_path / path.name)
    name = scratch_name("test")
    dsn = with_path(pg_server, f"/{name}")
    await migrate(dsn, tmp_path)
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(with_path(pg_server, "/postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _router_actions(conn: asyncpg.Connection, answer_ids: list[str]) -> None:
    await conn.executemany(
        """INSERT INTO router_actions (action_id, answer_id, action, rule, scored_event_id,
               correlation_id)
           VALUES ($1, $2, 'service', 'detractor', $1, 'c')""",
        [(uuid.uuid4(), answer_id) for answer_id in answer_ids],
    )


async def test_router_actions_get_the_portal_of_their_answer(before: str) -> None:
    answers = {
        "m1:9:EQ-LASER-A": "m1",
        "shop.bitrix24.ru:D_1000042:EQ:X": "shop.bitrix24.ru",
        "host:8443:17:EQ-CRYO-B": "host:8443",  # the served portal's key holds a colon
        "not an answer id": "default",
    }
    conn = await asyncpg.connect(before)
    try:
        await conn.execute("INSERT INTO ingest_portal (member_id) VALUES ('host:8443')")
        await _router_actions(conn, list(answers))
        assert set(KEYED) <= set(await migrate(before))
        rows = await conn.fetch("SELECT answer_id, portal FROM router_actions")
    finally:
        await conn.close()
    assert {r["answer_id"]: r["portal"] for r in rows} == answers


async def test_survey_items_get_their_requests_portal_else_the_served_one(before: str) -> None:
    registered, unregistered = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(before)
    try:
        await conn.execute("INSERT INTO ingest_portal (member_id) VALUES ('m-served')")
        await conn.execute(
            """INSERT INTO survey_requests (request_id, portal, contact_id, category_id, lang)
               VALUES ($1, 'm-pinned', 7, 12, 'en')""",
            registered,
        )
        await conn.executemany(
            "INSERT INTO crm_survey_items (request_id, item_id, version) VALUES ($1, 5, 1)",
            [(registered,), (unregistered,)],
        )
        assert set(KEYED) <= set(await migrate(before))
        items = await conn.fetch("SELECT request_id, portal FROM crm_survey_items")
    finally:
        await conn.close()
    assert {r["request_id"]: r["portal"] for r in items} == {
        registered: "m-pinned",
        unregistered: "m-served",
    }


async def test_discards_get_the_portal_of_their_message(before: str) -> None:
    bodies = {
        "m-event": {"portal": {"member_id": "m-alpha", "domain": "a.bitrix24.ru"}},
        "m-domain": {"portal": {"member_id": None, "domain": "b.bitrix24.ru"}},
        "m-empty": {"portal": {}},
        "m-blank": {"portal": {"member_id": "", "domain": "c.bitrix24.ru"}},
        "m-route": {"answer": {"portal": {"member_id": "m-beta"}}, "action": "service"},
        "m-written": {"action_id": "x", "outcome": "created"},
    }
    conn = await asyncpg.connect(before)
    try:
        await conn.executemany(
            """INSERT INTO ops_dlq_discards (queue, message_id, routing_key, failure, attempts,
                   body, reason, discarded_by)
               VALUES ('q', $1, 'k', 'f', 1, $2::jsonb, 'r', 'alice')""",
            [(message, json.dumps(body)) for message, body in bodies.items()],
        )
        assert set(KEYED) <= set(await migrate(before))
        discards = await conn.fetch("SELECT message_id, portal FROM ops_dlq_discards")
    finally:
        await conn.close()
    assert {r["message_id"]: r["portal"] for r in discards} == {
        "m-event": "m-alpha",
        "m-domain": "b.bitrix24.ru",
        "m-empty": "default",
        "m-blank": "c.bitrix24.ru",
        "m-route": "m-beta",
        "m-written": None,
    }


async def test_survey_items_without_a_learned_portal_get_default(before: str) -> None:
    conn = await asyncpg.connect(before)
    try:
        await conn.execute(
            "INSERT INTO crm_survey_items (request_id, item_id, version) VALUES ($1, 5, 1)",
            uuid.uuid4(),
        )
        await migrate(before)
        portal = await conn.fetchval("SELECT portal FROM crm_survey_items")
    finally:
        await conn.close()
    assert portal == "default"
