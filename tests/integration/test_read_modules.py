"""The read modules others read scoring's and crm_sync's tables through, on the real PostgreSQL:
each read keeps to its portal (and its items or answers when given)."""

from __future__ import annotations

import uuid

import asyncpg

from services.crm_sync import read as crm_sync_read
from services.crm_sync.store import AuditRow, Changes, ConflictRow, record
from services.router import read as router_read
from services.scoring import read as scoring_read
from services.scoring.handlers import score_submission
from shared.db import Conn
from shared.outbox import Outbox
from tests.support.scoring import make_submission


def _portal(tag: str) -> str:
    return f"m-{tag}-{uuid.uuid4().hex[:10]}"


async def test_scoring_reads_the_scored_items_and_current_answers_of_one_portal(
    pool: asyncpg.Pool, outbox: Outbox
) -> None:
    portal, other = _portal("read"), _portal("other")
    await score_submission(
        pool, outbox, make_submission(("CREAM", 9), ("SERUM", None), member_id=portal)
    )
    await score_submission(
        pool,
        outbox,
        make_submission(("EQ-A", 3), item_id=2, member_id=portal, kind="equipment", category_id=12),
    )
    await score_submission(pool, outbox, make_submission(("CREAM", 9), item_id=3, member_id=other))
    deal = make_submission(
        ("DEAL-SALES", 10),
        item_id=1,
        member_id=portal,
        kind="deal",
        entity_type_id=2,
        category_id=20,
        segment="After the sale",
    )
    await score_submission(pool, outbox, deal)  # an NPS deal with the id of an item

    async with pool.acquire() as conn:
        scored = await scoring_read.scored_items(conn, portal)
        some = await scoring_read.scored_items(conn, portal, [(1038, 2), (1038, 3), (2, 99)])
        ids = await scoring_read.answer_ids(conn, portal, [(1038, 1)])
        deal_ids = await scoring_read.answer_ids(conn, portal, [(2, 1)])
        answers = await scoring_read.current_answers(conn, portal)

    assert scored == {(1038, 1), (1038, 2), (2, 1)}
    assert some == {(1038, 2)}
    assert sorted(ids) == [f"{portal}:1:CREAM", f"{portal}:1:SERUM"]
    assert deal_ids == [f"{portal}:D_1:DEAL-SALES"]
    assert sorted((a.answer_id, a.kind, a.category, a.category_id) for a in answers) == [
        (f"{portal}:1:CREAM", "cosmetics", "promoter", 10),
        (f"{portal}:2:EQ-A", "equipment", "detractor", 12),
        (f"{portal}:D_1:DEAL-SALES", "deal", "promoter", 20),
    ]


async def _action(
    conn: Conn, portal: str, answer_id: str, action: str, outcome: str | None
) -> None:
    await conn.execute(
        """INSERT INTO crm_actions (action_id, portal, action, answer_id, state, outcome)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        str(uuid.uuid4()),
        portal,
        action,
        answer_id,
        "pending" if outcome is None else "done",
        outcome,
    )


async def test_crm_sync_reads_actions_conflicts_and_writes_of_one_portal(
    pool: asyncpg.Pool, outbox: Outbox
) -> None:
    portal, other = _portal("crm"), _portal("crm-other")
    async with pool.acquire() as conn:
        await _action(conn, portal, "a1", "contact", "patched")
        await _action(conn, portal, "a2", "task", None)
        await _action(conn, portal, "a3", "service", "created")
        await _action(conn, other, "a1", "contact", None)
        await record(
            outbox,
            conn,
            Changes(
                audit=[
                    AuditRow(portal, 501, "UF_NPS", None, "9", "answer", "x1", "a1"),
                    AuditRow(portal, 502, "UF_HIST", ["7"], ["7", "9"], "answer", "x3", "a3"),
                    AuditRow(other, 501, "UF_NPS", None, "3", "answer", "x4", "a1"),
                ],
                conflicts=[
                    ConflictRow(portal, 501, "UF_A", "legacy value kept", "7", "9", "a1", "x1"),
                    ConflictRow(portal, 502, "UF_A", "legacy value kept", "5", "9", "a3", "x3"),
                    ConflictRow(other, 501, "UF_A", "legacy value kept", "1", "9", "a1", "x4"),
                ],
            ),
        )

        every = await crm_sync_read.actions(conn, portal)
        of_a1 = await crm_sync_read.actions(conn, portal, ["a1", "a2"])
        states = await crm_sync_read.action_states(conn, portal)
        conflicts = await crm_sync_read.conflict_count(conn, portal=portal)
        of_a3 = await crm_sync_read.conflict_count(conn, portal=portal, answer_ids=["a3"])
        everywhere = await crm_sync_read.conflict_count(conn, portal=None)
        listed = await crm_sync_read.list_conflicts(conn, portal=portal)
        all_listed = await crm_sync_read.list_conflicts(conn, portal=None, limit=100_000)
        writes = await crm_sync_read.portal_writes(conn, portal)

    assert sorted((a.answer_id, a.action, a.state, a.outcome) for a in every) == [
        ("a1", "contact", "done", "patched"),
        ("a2", "task", "pending", None),
        ("a3", "service", "done", "created"),
    ]
    assert sorted(a.answer_id for a in of_a1) == ["a1", "a2"]
    assert states == crm_sync_read.ActionStates(done=2, pending=1)
    assert (conflicts, of_a3) == (2, 1)
    assert everywhere is not None
    assert everywhere >= 3
    assert [(c.contact_id, c.current, c.proposed) for c in listed] == [
        (502, "5", "9"),
        (501, "7", "9"),
    ]
    assert {c.portal for c in all_listed} >= {portal, other}
    assert [(w.contact_id, w.field, w.before, w.after) for w in writes] == [
        (501, "UF_NPS", None, "9"),
        (502, "UF_HIST", ["7"], ["7", "9"]),
    ]


async def test_router_crm_sync_and_scoring_reads_keep_to_their_portal(pool: asyncpg.Pool) -> None:
    portal, other = _portal("keyed"), _portal("other")
    request, elsewhere = uuid.uuid4(), uuid.uuid4()
    item = uuid.uuid4().int % 10**12  # an item id no other test writes
    await pool.executemany(
        """INSERT INTO router_actions (action_id, answer_id, action, rule, scored_event_id,
               correlation_id, portal)
           VALUES ($1, $2 || ':1:SKU', 'service', 'detractor', $1, 'c', $2)""",
        [(uuid.uuid4(), portal), (uuid.uuid4(), portal), (uuid.uuid4(), other)],
    )
    await pool.executemany(
        """INSERT INTO crm_survey_items (request_id, item_id, version, portal)
           VALUES ($1, $2, 1, $3)""",
        [(request, item, portal), (elsewhere, item, other)],
    )
    async with pool.acquire() as conn:
        assert await router_read.sent_actions(conn, portal) == 2
        assert await router_read.sent_actions(conn, other) == 1
        assert await router_read.sent_actions(conn, None) >= 3
        assert await crm_sync_read.survey_item_requests(conn, portal, [item]) == [(item, request)]
        assert sorted(await crm_sync_read.survey_item_requests(conn, None, [item])) == sorted(
            [(item, request), (item, elsewhere)]
        )
        assert await scoring_read.last_scored_at(conn, _portal("none")) is None
