"""Dispatch's register filled through dispatch's own code, for the pages that read it.

`Register` drives a `Dispatcher` (the portal channel, so no mail server is needed) with the
events its requests meet on their way: a sale closed, the NPS deal created, the link ready, the
portal send confirmed, opened, answered, the timer's reminders and the unanswered call task.
Its clock moves only when a test moves it, and its portal key is its own, so tests sharing the
database do not see each other's requests.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import yaml

from services.dispatch.dispatcher import Dispatcher
from services.dispatch.mailer import Mailer
from services.dispatch.settings import DispatchSettings
from shared.events import (
    CrmWritten,
    PortalRef,
    SaleClosed,
    SoldProduct,
    SurveyAnswered,
    SurveyOpened,
    SurveyReady,
)
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from tests.support.crm_sync import client_for, new_portal
from tests.support.paths import EXAMPLE_CONFIG

MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
"""When a `Register`'s clock starts (inside the send window)."""
DEAL_SURVEY = "After the sale"
LASER_SURVEY = "Laser A"
LASER_PRODUCT = 101
"""The portal product id `dispatch_config` maps to the laser's SKU (EQ-LASER-A)."""


def dispatch_config(timezone: str = "UTC", **overrides: Any) -> PortalConfig:
    """The example portal YAML with dispatch through the portal channel: one reminder 3 days
    after the first message, unanswered 2 days after the last, a call task for the sale's
    responsible (else user 5)."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["portal"]["timezone"] = timezone
    data["dispatch"] = {
        "channel": "portal",
        "language": "en",
        "portal_channel": {"link_field": "UF_CRM_NPS_LINK", "trigger": "NPS_SEND"},
        "window": {"start": "09:00", "end": "20:00"},
        "reminders": {"after_days": [3]},
        "unanswered": {"after_days": 2, "task": True, "responsible_id": 5},
        "sales": [{"funnel": 0, "survey": DEAL_SURVEY, "products": True}],
        "products": {str(LASER_PRODUCT): "EQ-LASER-A"},
        **overrides,
    }
    return parse_portal_config(data)


class Register:
    """Requests of one portal, put into the states a test needs by dispatch's own handlers."""

    def __init__(
        self, pool: asyncpg.Pool, config: PortalConfig | None = None, portal: str | None = None
    ) -> None:
        self.pool = pool
        self.config = config or dispatch_config()
        self.portal = PortalRef(member_id=portal or f"m-asked-{uuid.uuid4().hex[:10]}")
        self.now = MONDAY_10
        settings = DispatchSettings(_env_file=None)
        self.dispatcher = Dispatcher(
            pool,
            Outbox(),
            self.config,
            portal=client_for(new_portal(contacts=5)),
            mailer=Mailer(settings),
            settings=settings,
            clock=lambda: self.now,
        )
        self._deals = 900

    @property
    def key(self) -> str:
        return self.portal.key

    def later(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    async def sale(
        self,
        deal_id: int,
        contact_id: int | None,
        *,
        responsible_id: int | None = 31,
        products: tuple[int, ...] = (),
    ) -> dict[str, uuid.UUID]:
        """A won sale: its requests (survey name -> request id), NPS deals created and links
        ready, not sent yet."""
        await self.dispatcher.on_sale(
            SaleClosed(
                correlation_id=f"deal:{deal_id}",
                portal=self.portal,
                source="event",
                deal_id=deal_id,
                category_id=0,
                stage_id="WON",
                contact_id=contact_id,
                responsible_id=responsible_id,
                closed_at=self.now,
                products=tuple(SoldProduct(product_id=p, name=f"P{p}") for p in products),
            )
        )
        rows = await self.pool.fetch(
            "SELECT request_id, survey, kind, state FROM dispatch_requests"
            " WHERE portal = $1 AND ref = $2",
            self.key,
            str(deal_id),
        )
        for row in rows:
            if row["state"] != "scheduled":
                continue
            if row["kind"] == "deal":
                self._deals += 1
                await self.written(row["request_id"], "nps_deal", 0, entity_id=self._deals)
            await self.dispatcher.on_ready(
                SurveyReady(
                    correlation_id="test",
                    request_id=row["request_id"],
                    portal=self.portal,
                    url=f"http://survey.test/s/{row['request_id']}",
                    optout_url=f"http://survey.test/s/{row['request_id']}/optout",
                    company="Demo Clinic Supply",
                    expires_at=self.now + timedelta(days=60),
                )
            )
        return {row["survey"]: row["request_id"] for row in rows}

    async def written(
        self,
        request_id: uuid.UUID,
        action: str,
        n: int,
        *,
        entity_id: int,
        failed: str | None = None,
    ) -> None:
        """crm_sync's outcome of dispatch's command `action` number `n` for the request."""
        await self.dispatcher.on_written(
            CrmWritten(
                correlation_id="test",
                action_id=f"{request_id}:{action}:{n}",
                action=action,
                outcome="failed" if failed else "created" if action != "survey_send" else "sent",
                entity_type="task" if action == "call_task" else "deal",
                entity_id=entity_id,
                details={"reason": failed} if failed else {},
            )
        )

    async def tick(self) -> list[dict[str, Any]]:
        """The timer's round at the clock's time; then every portal send it queued confirmed
        by crm_sync. The portal sends confirmed: (request id, n)."""
        before = await self._sends()
        await self.dispatcher.tick(self.now)
        confirmed = []
        for row in await self._sends():
            if row not in before:
                request_id, n = row["request_id"], row["n"]
                deal = await self.pool.fetchval(
                    "SELECT coalesce(nps_deal_id, sale_deal_id) FROM dispatch_requests"
                    " WHERE request_id = $1",
                    request_id,
                )
                await self.written(request_id, "survey_send", n, entity_id=deal)
                confirmed.append(dict(row))
        return confirmed

    async def _sends(self) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT s.request_id, s.n FROM dispatch_sends s"
                " JOIN dispatch_requests r USING (request_id)"
                " WHERE r.portal = $1 AND s.state = 'sending' ORDER BY 1, 2",
                self.key,
            )
        )

    async def opened(self, request_id: uuid.UUID) -> None:
        await self.dispatcher.on_opened(
            SurveyOpened(
                correlation_id="test",
                request_id=request_id,
                portal=self.portal,
                opened_at=self.now,
            )
        )

    async def answered(self, request_id: uuid.UUID, category_id: int = 12) -> None:
        await self.dispatcher.on_answered(
            SurveyAnswered(
                correlation_id="test",
                request_id=request_id,
                version=1,
                portal=self.portal,
                contact_id=1,
                category_id=category_id,
                scale="0-10",
                answers=[],
                answered_at=self.now,
            )
        )

    async def row(self, request_id: uuid.UUID) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT * FROM dispatch_requests WHERE request_id = $1", request_id
        )
        assert row is not None
        return dict(row)
