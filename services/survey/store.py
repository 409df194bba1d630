"""The survey page's SQL: `survey_requests`, `survey_answers` and `survey_logos`
(migrations/0500_survey.sql, 0510_survey_deals.sql, 0520_survey_dispatch.sql,
0530_survey_logos.sql)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from services.survey.form import Answer
from services.survey.requests import SurveyRequest
from shared.db import Conn
from shared.survey_page import Logo


@dataclass(frozen=True)
class StoredRequest:
    """A stored request, the answer it has received (None: none yet), whether its form has
    been shown and whether its contact opted out through it."""

    request: SurveyRequest
    answer: Answer | None
    opened: bool = False
    opted_out: bool = False


async def add_request(conn: Conn, request: SurveyRequest) -> bool:
    """Store `request`: False (and nothing changes) when a request with its id exists."""
    added: bool | None = await conn.fetchval(
        """INSERT INTO survey_requests
               (request_id, portal, contact_id, category_id, sku, lang, deal_id, correlation_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (request_id) DO NOTHING
           RETURNING true""",
        request.request_id,
        request.portal,
        request.contact_id,
        request.category_id,
        request.sku,
        request.lang,
        request.deal_id,
        request.correlation_id,
    )
    return bool(added)


async def get_request(conn: Conn, request_id: uuid.UUID) -> SurveyRequest | None:
    found = await find_request(conn, request_id)
    return None if found is None else found.request


async def find_request(conn: Conn, request_id: uuid.UUID) -> StoredRequest | None:
    """The request with its answer and state, in one round trip (None: no such request)."""
    row = await conn.fetchrow(
        """SELECT r.request_id, r.portal, r.contact_id, r.category_id, r.sku, r.lang, r.deal_id,
                  r.correlation_id, r.opened_at IS NOT NULL AS opened,
                  r.opted_out_at IS NOT NULL AS opted_out, a.answer
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
        correlation_id=row["correlation_id"],
    )
    return StoredRequest(request, answer, opened=row["opened"], opted_out=row["opted_out"])


async def mark_opened(conn: Conn, request_id: uuid.UUID) -> datetime | None:
    """Record that the request's form was shown: when, or None when it had been already."""
    opened_at: datetime | None = await conn.fetchval(
        """UPDATE survey_requests SET opened_at = now()
           WHERE request_id = $1 AND opened_at IS NULL
           RETURNING opened_at""",
        request_id,
    )
    return opened_at


async def mark_opted_out(conn: Conn, request_id: uuid.UUID) -> datetime | None:
    """Record the contact's opt-out through the request: when, or None when it had been
    recorded already."""
    opted_out_at: datetime | None = await conn.fetchval(
        """UPDATE survey_requests SET opted_out_at = now()
           WHERE request_id = $1 AND opted_out_at IS NULL
           RETURNING opted_out_at""",
        request_id,
    )
    return opted_out_at


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


async def keep_logo(conn: Conn, logo: Logo) -> None:
    """Keep `logo` by its hash (once), so its URL answers after the page stops showing it."""
    await conn.execute(
        """INSERT INTO survey_logos (sha256, media_type, content) VALUES ($1, $2, $3)
           ON CONFLICT (sha256) DO NOTHING""",
        logo.sha256,
        logo.media_type,
        logo.content,
    )


async def kept_logo(conn: Conn, sha256: str) -> Logo | None:
    """A logo kept by `keep_logo`; None when none has that hash."""
    row = await conn.fetchrow(
        "SELECT media_type, content FROM survey_logos WHERE sha256 = $1", sha256
    )
    return None if row is None else Logo(bytes(row["content"]), row["media_type"])
