"""SQL of the NPS deals' stage ledger (`crm_deal_stages`): which stage b24-nps moved a deal to,
for which answer version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.db import Conn


@dataclass(frozen=True)
class StageMark:
    stage_id: str
    answer_id: str
    updated_at: datetime
    """The `updated_at` of the answer version that decided the move."""


async def load(conn: Conn, portal: str, deal_id: int) -> StageMark | None:
    row = await conn.fetchrow(
        """SELECT stage_id, answer_id, updated_at FROM crm_deal_stages
           WHERE portal = $1 AND deal_id = $2""",
        portal,
        deal_id,
    )
    if row is None:
        return None
    return StageMark(row["stage_id"], row["answer_id"], row["updated_at"])


async def mark(
    conn: Conn,
    portal: str,
    deal_id: int,
    mark: StageMark,
    action_id: str,
) -> bool:
    """Record that b24-nps moves the deal to `mark.stage_id` (before the move is sent: a crash in
    between leaves a mark of a stage the deal may not be at, which the next decision reads right).
    False when a newer answer's mark is there already."""
    written = await conn.fetchval(
        """INSERT INTO crm_deal_stages AS s (portal, deal_id, stage_id, answer_id, updated_at,
               action_id)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (portal, deal_id) DO UPDATE
               SET stage_id = EXCLUDED.stage_id, answer_id = EXCLUDED.answer_id,
                   updated_at = EXCLUDED.updated_at, action_id = EXCLUDED.action_id,
                   changed_at = now()
               WHERE s.updated_at <= EXCLUDED.updated_at
           RETURNING 1""",
        portal,
        deal_id,
        mark.stage_id,
        mark.answer_id,
        mark.updated_at,
        action_id,
    )
    return written is not None
