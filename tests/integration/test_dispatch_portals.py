"""Dispatch serving two portals (issue #22): one `Dispatcher` and one `Follower`, given two
portals' configurations and clients (`shared/portals.py`) as `nps run dispatch` wires them,
against two sandbox portals (in process, over HTTP), a real SMTP server and PostgreSQL. Sales
closed on both portals make requests, e-mails (each portal's own sender, its own customers) and
NPS deals of their own portal only, in the same timer rounds; each portal's followed leads are
read through its own client; a portal not served is refused. The test plays the broker: each
event queued in the outbox goes to the handler the topology routes it to, for its portal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import yaml

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.dispatch import DispatchWriter
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.follower import Follower
from services.dispatch.mailer import Mailer
from services.dispatch.settings import DispatchSettings
from services.sandbox.crm import DEAL
from services.sandbox.methods import CONTACT, LEAD
from services.sandbox.portal import SandboxPortal
from services.sandbox.sales import close_sales
from services.survey.intake import IntakeSetup, RequestIntake
from services.survey.page_config import load_page_config
from services.survey.tokens import LinkSigner
from shared.events import (
    CrmWritten,
    DispatchCommand,
    PortalRef,
    SaleClosed,
    SurveyReady,
    SurveyRequested,
)
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from shared.portals import PortalClients, PortalConfigs, UnknownPortalError
from tests.support.crm_sync import client_for, new_portal
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.pump import Pump
from tests.support.smtp import Inbox
from tests.support.survey import DAY, EXAMPLE_PAGE, KEYS

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SURVEY = "After the sale"
NPS_FUNNEL = 20
SALES = 4
NAMES = ("alpha", "beta")


def config_for(name: str, member_id: str) -> PortalConfig:
    """The example portal YAML pinned to `member_id`, asking the deal survey of every won sale
    by e-mail from the portal's own sender."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["portal"]["timezone"] = "UTC"
    data["portal"]["member_id"] = member_id
    data["dispatch"] = {
        "channel": "email",
        "language": "en",
        "email": {"sender": f"{name.title()} <nps@{name}.example>"},
        "window": {"start": "09:00", "end": "20:00"},
        "sales": [{"funnel": 0, "survey": SURVEY}],
    }
    return parse_portal_config(data)


def sale(portal: SandboxPortal, deal_id: int) -> SaleClosed:
    deal = portal.crm.records(DEAL)[deal_id]
    return SaleClosed(
        correlation_id=f"deal:{deal_id}",
        portal=PortalRef(member_id=portal.member_id),
        source="event",
        deal_id=deal_id,
        category_id=int(deal["CATEGORY_ID"]),
        stage_id=str(deal["STAGE_ID"]),
        contact_id=deal["CONTACT_ID"],
        responsible_id=deal["ASSIGNED_BY_ID"],
        closed_at=NOW,
    )


async def test_sales_on_two_portals_make_requests_emails_and_nps_deals_of_their_own_portal(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    mailbox, port = inbox
    portals = {name: new_portal(contacts=20) for name in NAMES}
    keys = {name: portal.member_id for name, portal in portals.items()}
    configs = PortalConfigs({keys[n]: config_for(n, keys[n]) for n in NAMES})
    clients = PortalClients({keys[n]: client_for(portals[n]) for n in NAMES})
    now = [NOW]
    settings = DispatchSettings(smtp_port=port, _env_file=None)
    dispatcher = Dispatcher(
        pool,
        Outbox(),
        configs,
        portal=clients,
        mailer=Mailer(settings),
        settings=settings,
        clock=lambda: now[0],
    )
    writers = {
        key: DispatchWriter(pool, Outbox(), CommandCoalescer(clients.get(key), window_s=0.01))
        for key in keys.values()
    }
    intakes = {
        key: RequestIntake(
            pool,
            Outbox(),
            IntakeSetup(
                portal=configs.get(key),
                page=load_page_config(EXAMPLE_PAGE),
                signer=LinkSigner(KEYS, 30 * DAY, clock=NOW.timestamp),
                base_url=f"http://survey.test/{key}",
            ),
        )
        for key in keys.values()
    }

    async def nps_deal(_key: str, body: dict[str, Any]) -> None:
        command = DispatchCommand.model_validate(body)
        await writers[command.portal.key].carry_out(command)

    async def requested(_key: str, body: dict[str, Any]) -> None:
        request = SurveyRequested.model_validate(body)
        await intakes[request.portal.key].handle(request)

    async def written(_key: str, body: dict[str, Any]) -> None:
        await dispatcher.on_written(CrmWritten.model_validate(body))

    async def ready(_key: str, body: dict[str, Any]) -> None:
        await dispatcher.on_ready(SurveyReady.model_validate(body))

    pump = Pump(
        pool,
        {
            "dispatch.nps_deal": nps_deal,
            "crm.written.nps_deal": written,
            "survey.requested": requested,
            "survey.ready": ready,
        },
    )
    await pump.start()
    won = {name: close_sales(portals[name], SALES, seed=7).closed for name in NAMES}
    for name in NAMES:
        for deal_id in won[name]:
            await dispatcher.on_sale(sale(portals[name], deal_id))
    for _ in range(20):
        await pump.drain()
        looked = await dispatcher.tick()
        if not looked and not await pump.drain():
            break

    sent: dict[str, int] = {}
    for name in NAMES:
        key, crm = keys[name], portals[name].crm
        rows = await pool.fetch(
            "SELECT * FROM dispatch_requests WHERE portal = $1 ORDER BY ref", key
        )
        assert sorted(int(row["ref"]) for row in rows) == sorted(won[name])
        skipped = [row for row in rows if row["state"] == "skipped"]
        assert {row["reason"] for row in skipped} <= {"asked_recently"}  # a repeat buyer
        rows = [row for row in rows if row["state"] != "skipped"]
        assert {(row["state"], row["sends"]) for row in rows} == {("sent", 1)}
        sent[name] = len(rows)
        ids = {str(row["request_id"]) for row in rows}

        # Its e-mails: from its sender, to its customers, with its survey page's links.
        mails = [m for m in mailbox.messages if m["From"] == f"{name.title()} <nps@{name}.example>"]
        assert len(mails) == len(rows)
        addresses = {crm.records(CONTACT)[row["contact_id"]]["EMAIL"][0]["VALUE"] for row in rows}
        assert {m["To"] for m in mails} == addresses
        for mail in mails:
            text = mail.get_payload()[0].get_payload(decode=True).decode()  # type: ignore[index,union-attr]
            assert f"http://survey.test/{key}/s/" in text

        # Its NPS deals: one per request, in its own portal only.
        nps = [d for d in crm.records(DEAL).values() if d["CATEGORY_ID"] == NPS_FUNNEL]
        origins = [d["ORIGIN_ID"] for d in nps if d.get("ORIGINATOR_ID") == "b24-nps"]
        assert sorted(origins) == sorted(ids)
        for row in rows:
            deal = crm.records(DEAL)[row["nps_deal_id"]]
            assert (deal["ORIGIN_ID"], deal["UF_CRM_NPS_SALE_DEAL"]) == (
                str(row["request_id"]),
                int(row["ref"]),
            )
    assert len(mailbox.messages) == sum(sent.values())

    # A portal the deployment does not serve: refused, permanently (the message dead-letters).
    stranger = new_portal(contacts=2)
    with pytest.raises(UnknownPortalError):
        await dispatcher.on_sale(sale(stranger, close_sales(stranger, 1, seed=1).closed[0]))


async def test_each_portals_followed_leads_are_read_through_its_own_client(
    pool: asyncpg.Pool,
) -> None:
    portals = {name: new_portal(contacts=3) for name in NAMES}
    keys = {name: portal.member_id for name, portal in portals.items()}
    configs = PortalConfigs({keys[n]: config_for(n, keys[n]) for n in NAMES})
    clients = PortalClients({keys[n]: client_for(portals[n]) for n in NAMES})
    follower = Follower(pool, Outbox(), configs, portal=clients, clock=lambda: NOW)
    # The same lead id on both portals: converted on alpha, new on beta.
    leads = {}
    for name, status in (("alpha", "CONVERTED"), ("beta", "NEW")):
        lead = portals[name].crm.add(LEAD, {"TITLE": "NPS", "STATUS_ID": status}, method="test")
        leads[name] = int(lead["ID"])
    for name in NAMES:
        await follower.on_written(
            CrmWritten(
                correlation_id="test",
                occurred_at=NOW,
                action_id=f"{keys[name]}:service:{leads[name]}",
                action="service",
                outcome="created",
                entity_type="lead",
                entity_id=leads[name],
                details={"portal": keys[name], "responsible_id": 17},
            )
        )
    assert await follower.tick(NOW + timedelta(hours=1)) == len(NAMES)
    states = {
        row["portal"]: (row["state"], row["outcome"], row["status"])
        for row in await pool.fetch(
            "SELECT portal, state, outcome, status FROM dispatch_followups"
            " WHERE portal = ANY($1::text[])",
            list(keys.values()),
        )
    }
    assert states == {
        keys["alpha"]: ("closed", "success", "CONVERTED"),
        keys["beta"]: ("open", None, "NEW"),
    }
