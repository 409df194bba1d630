"""crm_sync against a sandbox portal, for its tests.

Every test gets its own sandbox portal (seeded with the demo data: contacts that already hold
legacy values in the mapped fields) and its own portal key, so the shared database needs no
cleanup.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.contacts import ContactWriter
from services.crm_sync.creates import EntityWriter
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget, RateBudget
from shared.events import PortalRef, RouteAction, ScoredAnswer
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from tests.support.paths import EXAMPLE_CONFIG

CONFIG_PATH = EXAMPLE_CONFIG
"""The portal configuration the sandbox portals are seeded from."""

LASER = 12
CRYO = 14
SCORE = "UF_CRM_NPS_LASER_A"
DATE = "UF_CRM_NPS_LASER_A_DATE"
HISTORY = "UF_CRM_NPS_HISTORY"
LASER_FIELDS = (SCORE, DATE, HISTORY)
NOW = datetime(2026, 3, 14, 10, 30, tzinfo=UTC)


def new_portal(*, contacts: int = 60, limits: Limits | None = None) -> SandboxPortal:
    portal = SandboxPortal(limits=limits or Limits.off())
    seed_demo(portal, config_path=CONFIG_PATH, contacts=contacts, seed=42)
    return portal


def base_url(portal: SandboxPortal) -> str:
    return f"http://sandbox/rest/{portal.user_id}/{portal.secret}/"


def client_for(
    portal: SandboxPortal,
    budget: RateBudget | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Bitrix24Client:
    return Bitrix24Client(
        base_url(portal),
        budget or MemoryRateBudget(None),
        transport=transport or httpx.ASGITransport(app=create_app(portal)),
        backoff_s=0.01,
        backoff_max_s=0.05,
    )


@dataclass
class Writers:
    coalescer: CommandCoalescer
    contacts: ContactWriter
    entities: EntityWriter


def writers(pool: asyncpg.Pool, client: Bitrix24Client, config: PortalConfig) -> Writers:
    coalescer = CommandCoalescer(client, window_s=0.02)
    outbox = Outbox()  # no relay runs: the tests read what the writers queued from the table
    return Writers(
        coalescer,
        ContactWriter(pool, outbox, coalescer, config, window_s=0.05),
        EntityWriter(pool, outbox, coalescer, config),
    )


def portal_ref() -> PortalRef:
    return PortalRef(member_id=f"test-{uuid.uuid4().hex[:12]}")


def answer(
    ref: PortalRef,
    contact_id: int | None,
    *,
    score: int = 9,
    segment: int = LASER,
    submitted: datetime = NOW,
    updated: datetime | None = None,
    item_id: int | None = None,
    comment: str | None = "Works great",
    responsible_id: int | None = 31,
    service_request: bool = False,
) -> ScoredAnswer:
    item = item_id if item_id is not None else 500 + (contact_id or 0)
    sku, name = ("EQ-LASER-A", "Laser A") if segment == LASER else ("EQ-CRYO-B", "Cryo B")
    category = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
    return ScoredAnswer(
        answer_id=f"{ref.key}:{item}:{sku}",
        portal=ref,
        entity_type_id=1038,
        item_id=item,
        category_id=segment,
        segment=name,
        kind="equipment",
        sku=sku,
        product_name=name,
        scale="0-10",
        score=score,
        category=category,
        comment=comment,
        service_request=service_request,
        contact_id=contact_id,
        responsible_id=responsible_id,
        submitted_at=submitted,
        updated_at=updated or submitted,
    )


def route(
    the_answer: ScoredAnswer, action: str = "contact", params: dict[str, Any] | None = None
) -> RouteAction:
    identifier = str(uuid.uuid4())
    return RouteAction(
        event_id=uuid.UUID(identifier),
        correlation_id=f"corr-{identifier[:8]}",
        action_id=identifier,
        action=action,
        rule=f"builtin:{action}",
        answer=the_answer,
        params=params or {},
    )


def contact(portal: SandboxPortal, contact_id: int) -> dict[str, Any]:
    record = portal.crm.get(CONTACT, contact_id)
    assert record is not None
    return dict(record)


def contacts_where(portal: SandboxPortal, test: Callable[[dict[str, Any]], bool]) -> list[int]:
    return sorted(cid for cid, record in portal.crm.records(CONTACT).items() if test(record))


def blank_laser(record: dict[str, Any]) -> bool:
    return not record.get(SCORE) and not record.get(DATE) and not record.get(HISTORY)


def legacy_laser(record: dict[str, Any]) -> bool:
    return bool(record.get(SCORE)) and bool(record.get(HISTORY))


def changes(portal: SandboxPortal, contact_id: int) -> list[tuple[str, Any, Any, str]]:
    """The contact's field history in the portal: (field, before, after, method)."""
    return [
        (c.field, c.before, c.after, c.method)
        for c in portal.crm.history(CONTACT, contact_id)
        if c.method != "seed"
    ]


def commands_of(request: httpx.Request) -> dict[str, str]:
    """The `cmd` map of a batch request (empty for any other request)."""
    if not request.url.path.endswith("/batch.json"):
        return {}
    body = json.loads(request.content or b"{}")
    cmd = body.get("cmd")
    return cmd if isinstance(cmd, dict) else {}


Hook = Callable[[httpx.Request], Awaitable[None]]


class HookedTransport(httpx.AsyncBaseTransport):
    """The sandbox's ASGI transport with hooks around each request: `before` runs as the
    request leaves (a person editing the portal meanwhile), `after` once the portal has
    handled it (and may raise, as a lost answer would)."""

    def __init__(
        self, portal: SandboxPortal, *, before: Hook | None = None, after: Hook | None = None
    ) -> None:
        self._inner = httpx.ASGITransport(app=create_app(portal))
        self._before = before
        self._after = after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._before is not None:
            await self._before(request)
        response = await self._inner.handle_async_request(request)
        if self._after is not None:
            await self._after(request)
        return response


def days(n: int) -> timedelta:
    return timedelta(days=n)


async def ledger_rows(pool: asyncpg.Pool, ref: PortalRef, contact_id: int) -> dict[str, Any]:
    rows = await pool.fetch(
        "SELECT field, owned_value, answer_id FROM crm_field_ledger"
        " WHERE portal = $1 AND contact_id = $2",
        ref.key,
        contact_id,
    )
    return {
        row["field"]: (json.loads(row["owned_value"]) if row["owned_value"] else None)
        for row in rows
    }


async def audit_rows(pool: asyncpg.Pool, ref: PortalRef, contact_id: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT id, field, before_value, after_value, kind, before_ours, undone_by"
        " FROM crm_contact_writes WHERE portal = $1 AND contact_id = $2 ORDER BY id",
        ref.key,
        contact_id,
    )
    return [
        {
            "id": row["id"],
            "field": row["field"],
            "before": json.loads(row["before_value"]) if row["before_value"] else None,
            "after": json.loads(row["after_value"]) if row["after_value"] else None,
            "kind": row["kind"],
            "before_ours": row["before_ours"],
            "undone_by": row["undone_by"],
        }
        for row in rows
    ]


async def conflict_rows(
    pool: asyncpg.Pool, ref: PortalRef, contact_id: int
) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT field, reason FROM crm_conflicts WHERE portal = $1 AND contact_id = $2 ORDER BY id",
        ref.key,
        contact_id,
    )
    return [(row["field"], row["reason"]) for row in rows]
