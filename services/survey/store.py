"""The survey page's SQL: `survey_requests` and `survey_answers` (migrations/0500_survey.sql,
0510_survey_deals.sql)."""

from __future__ import annotations

import json
import uuid

from services.survey.form import Answer
from services.survey.requests import SurveyRequest
from shared.db import Conn


async def add_request(conn: Conn, request: SurveyRequest) -> None:
    await conn.execute(
        """INSERT INTO survey_requests
               (request_id, portal, contact_id, category_id, sku, lang, deal_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        request.request_id,
        request.portal,
        request.contact_id,
        request.category_id,
        request.sku,
        request.lang,
        request.deal_id,
    )


async def get_request(conn: Conn, request_id: uuid.UUID) -> SurveyRequest | None:
    found = await get_request_and_answer(conn, request_id)
    return None if found is None else found[0]


async def get_request_and_answer(
    conn: Conn, request_id: uuid.UUID
) -> tuple[SurveyRequest, Answer | None] | None:
    """The request and the answer it has received (None: none yet), in one round trip."""
    row = await conn.fetchrow(
        """SELECT r.request_id, r.portal, r.contact_id, r.category_id, r.sku, r.lang, r.deal_id,
                  a.answer
           FROM survey_requests r LEFT JOIN survey_answers a USING (request_id)
           WHERE r.request_id = $1""",
        request_id,
    )
    if row is None:
        return None
    answer = None if row["answer"] is None else Answer.from_json(json.loads(row["answer"]))
    request = SurveyRequest(
        request_id=row["request_id"],
        portal=row["portal"],
        contact_id=row["contact_id"],
        category_id=row["category_id"],
        sku=row["sku"],
        lang=row["lang"],
        deal_id=row["deal_id"],
    )
    return request, answer


async def save_answer(conn: Conn, request_id: uuid.UUID, answer: Answer) -> int | None:
    """Store the request's answer (a change replaces it): the new version, or None when the
    same answer was stored already (a double submit)."""
    version: int | None = await conn.fetchval(
        """INSERT INTO survey_answers (request_id, version, answer) VALUES ($1, 1, $2::jsonb)
           ON CONFLICT (request_id) DO UPDATE
               SET version = survey_answers.version + 1, answer = EXCLUDED.answer,
                   updated_at = now()
               WHERE survey_answers.answer IS DISTINCT FROM EXCLUDED.answer
           RETURNING version""",
        request_id,
        json.dumps(answer.to_json()),
    )
    return version
