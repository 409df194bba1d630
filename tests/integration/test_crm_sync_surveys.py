"""Survey page answers written into the sandbox portal as smart-process items: content, one item
per request, changes in place, late and repeated messages, a lost answer, a portal that is down."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.survey_items import XML_PREFIX
from services.crm_sync.surveys import SurveyWriter
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from shared.bitrix24 import PgRateBudget, PortalUnavailable
from shared.db import create_pool
from shared.events import PortalRef, ProductAnswer, Scale, SurveyAnswered
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from tests.support.crm_sync import (
    HookedTransport,
    client_for,
    commands_of,
    new_portal,
)

NPS_TYPE = 1038


def answered(
    request_id: uuid.UUID,
    category: int,
    scores: dict[str, int | None],
    *,
    version: int = 1,
    service: bool = False,
    comment: str | None = None,
    contact: int = 3,
    scale: Scale = "0-10",
) -> SurveyAnswered:
    return SurveyAnswered(
        correlation_id=f"survey-{request_id}",
        request_id=request_id,
        version=version,
        portal=PortalRef(),
        contact_id=contact,
        category_id=category,
        scale=scale,
        answers=[ProductAnswer(sku=sku, name=sku, score=score) for sku, score in scores.items()],
        service_request=service,
        comment=comment,
        answered_at=datetime(2026, 3, 14, 10, 30, tzinfo=UTC),
    )


def writer(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    config: PortalConfig,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SurveyWriter:
    coalescer = CommandCoalescer(client_for(portal, transport=transport), window_s=0.01)
    return SurveyWriter(pool, Outbox(), coalescer, config)


def items(portal: SandboxPortal, request_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        record
        for record in portal.crm.records(NPS_TYPE).values()
        if record.get("XML_ID") == f"{XML_PREFIX}{request_id}"
    ]


async def test_an_equipment_answer_becomes_an_item_of_its_category(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    request = uuid.uuid4()
    event = answered(request, 12, {"EQ-LASER-A": 2}, service=True, comment="Cooling broke")

    written = await writer(pool, portal, portal_config).write(event)

    assert written is not None
    assert (written.action, written.outcome, written.entity_type) == ("survey", "created", "item")
    (item,) = items(portal, request)
    assert item["ID"] == written.entity_id
    assert item["CATEGORY_ID"] == 12
    assert item["CONTACT_ID"] == 3
    assert item["UF_CRM_5_SCORE"] == 2
    assert item["UF_CRM_5_TO_SERVICE"] is True
    assert item["UF_CRM_5_COMMENT"] == "Cooling broke"
    contact = portal.crm.records(CONTACT)[3]
    assert item["ASSIGNED_BY_ID"] == contact["ASSIGNED_BY_ID"]
    queued = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key = 'crm.written.survey'"
        " AND body->>'action_id' = $1",
        f"survey:{request}:1",
    )
    assert queued == 1


async def test_a_cosmetics_answer_sets_tested_flags_and_scores(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    request = uuid.uuid4()
    w = writer(pool, portal, portal_config)
    scores = {"COS-SERUM": 10, "COS-CREAM": None, "COS-MASK": 6}

    await w.write(answered(request, 10, scores, comment="Lovely"))
    (item,) = items(portal, request)
    assert item["CATEGORY_ID"] == 10
    assert [item[f"UF_CRM_5_{p}_TESTED"] for p in ("SERUM", "CREAM", "MASK", "PEEL")] == [
        True,
        True,
        True,
        False,
    ]
    assert (item["UF_CRM_5_SERUM_SCORE"], item["UF_CRM_5_MASK_SCORE"]) == (10, 6)
    assert item["UF_CRM_5_CREAM_SCORE"] in (None, "")

    await w.write(answered(request, 10, {"COS-SERUM": 9}, version=2))
    (item,) = items(portal, request)
    assert (item["UF_CRM_5_SERUM_TESTED"], item["UF_CRM_5_MASK_TESTED"]) == (True, False)
    assert item["UF_CRM_5_SERUM_SCORE"] == 9
    assert item["UF_CRM_5_MASK_SCORE"] in (None, "")
    assert item["UF_CRM_5_COMMENT"] in (None, "")


async def test_a_list_score_field_gets_the_list_item_of_the_score(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    request = uuid.uuid4()
    await writer(pool, portal, portal_config).write(answered(request, 14, {"EQ-CRYO-B": 7}))
    (item,) = items(portal, request)
    spec = portal.crm.state.entity_types[NPS_TYPE].fields["UF_CRM_5_CRYO_SCORE"]
    values = {str(entry.id): entry.value for entry in spec.items}
    assert values[str(item["UF_CRM_5_CRYO_SCORE"])] == "7"


async def test_one_item_per_request_changed_in_place_and_never_by_an_older_version(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    request = uuid.uuid4()
    w = writer(pool, portal, portal_config)
    first = answered(request, 12, {"EQ-LASER-A": 3})
    second = answered(request, 12, {"EQ-LASER-A": 9}, version=2)

    assert (await w.write(first)) is not None
    assert (await w.write(first)) is None  # a redelivery
    changed = await w.write(second)
    assert changed is not None
    assert changed.outcome == "patched"
    assert (await w.write(first)) is None  # late: older than what the item holds
    (item,) = items(portal, request)
    assert item["UF_CRM_5_SCORE"] == 9
    assert item["ID"] == changed.entity_id


async def test_an_item_created_without_an_answer_is_found_not_made_twice(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    request = uuid.uuid4()
    lost = False

    async def lose_answer(sent: httpx.Request) -> None:
        nonlocal lost
        if not lost and any("crm.item.add" in c for c in commands_of(sent).values()):
            lost = True
            raise httpx.ReadTimeout("no answer in time", request=sent)

    flaky = writer(pool, portal, portal_config, HookedTransport(portal, after=lose_answer))
    event = answered(request, 12, {"EQ-LASER-A": 8})
    with pytest.raises(PortalUnavailable):
        await flaky.write(event)
    assert len(items(portal, request)) == 1
    again = await writer(pool, portal, portal_config).write(event)
    assert again is not None
    assert again.outcome == "patched"
    assert len(items(portal, request)) == 1


async def test_a_portal_that_is_down_keeps_the_answer_waiting(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    request = uuid.uuid4()

    async def down(sent: httpx.Request) -> None:
        raise httpx.ConnectError("connection refused", request=sent)

    event = answered(request, 12, {"EQ-LASER-A": 1})
    with pytest.raises(PortalUnavailable):
        await writer(pool, portal, portal_config, HookedTransport(portal, before=down)).write(event)
    recorded = await pool.fetchval(
        "SELECT count(*) FROM crm_survey_items WHERE request_id = $1", request
    )
    assert recorded == 0
    assert items(portal, request) == []
    assert (await writer(pool, portal, portal_config).write(event)) is not None
    assert len(items(portal, request)) == 1


async def test_an_answer_of_an_unknown_segment_is_dead_lettered(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    with pytest.raises(PermanentError, match="segment 99"):
        await writer(pool, portal, portal_config).write(answered(uuid.uuid4(), 99, {"X": 1}))


async def test_more_answers_at_once_than_pool_connections_all_get_written(
    pg_dsn: str, portal_config: PortalConfig
) -> None:
    """The portal's budget takes a connection of the same pool for each request: a writer that
    held a connection (a transaction) while it asked the portal would starve the others."""
    portal = new_portal(contacts=12)
    small = await create_pool(pg_dsn, max_size=3)
    try:
        budget = PgRateBudget(small, f"p-{uuid.uuid4().hex[:8]}", None)
        coalescer = CommandCoalescer(client_for(portal, budget), window_s=0.01)
        survey = SurveyWriter(small, Outbox(), coalescer, portal_config)
        requests = [uuid.uuid4() for _ in range(10)]
        events = [
            answered(request, 12, {"EQ-LASER-A": n}, contact=1 + n)
            for n, request in enumerate(requests)
        ]
        written = await asyncio.wait_for(
            asyncio.gather(*(survey.write(event) for event in events)), timeout=60
        )
    finally:
        await small.close()
    assert [w is not None and w.outcome for w in written] == ["created"] * 10
    assert all(len(items(portal, request)) == 1 for request in requests)


async def test_versions_of_one_request_at_once_write_in_turn(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    request = uuid.uuid4()
    survey = writer(pool, portal, portal_config)
    first = answered(request, 12, {"EQ-LASER-A": 2}, version=1)
    second = answered(request, 12, {"EQ-LASER-A": 9}, version=2)

    written = await asyncio.gather(survey.write(first), survey.write(second))

    assert sorted(w.outcome for w in written if w is not None) in (
        ["created", "patched"],  # in order of arrival
        ["created"],  # the second first: the first is then late and writes nothing
    )
    (item,) = items(portal, request)
    assert item["UF_CRM_5_SCORE"] == 9
