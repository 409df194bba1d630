"""The survey page's SQL: `survey_requests` and `survey_answers` (migrations/0500_survey.sql)."""

from __future__ import annotations

import uuid

from services.survey.requests import SurveyRequest
from shared.db import Conn


async def add_request(conn: Conn, request: SurveyRequest) -> None:
    await conn.execute(
        """INSERT INTO survey_requests (request_id, portal, contact_id, category_id, sku, lang)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        request.request_id,
        request.portal,
        request.contact_id,
        request.category_id,
        request.sku,
        request.lang,
    )


async def get_request(conn: Conn, request_id: uuid.UUID) -> SurveyRequest | None:
    row = await conn.fetchrow(
        """SELECT request_id, portal, contact_id, category_id, sku, lang
           FROM survey_requests WHERE request_id = $1""",
        request_id,
    )
    if row is None:
        return None
    return SurveyRequest(
        request_id=row["request_id"],
        portal=row["portal"],
        contact_id=row["contact_id"],
        category_id=row["category_id"],
        sku=row["sku"],
        lang=row["lang"],
    )
