"""Two dispatch replicas and a slow SMTP server: never two messages for one request (a bug found
while measuring dispatch under load, fixed by a lease per message).

The timer used to record a whole round's e-mail sends as `sending` with one `started_at` (the
round's start) and then sent them one after the other. The lease (`DISPATCH_LEASE_S`, 300 s) is
counted from that start, so the round's later messages are still unsent when it runs out if the
SMTP server is slow (a tarpit, greylisting delays, 50 messages, each up to `DISPATCH_SMTP_TIMEOUT_S`
30 s): a second dispatch replica (`store.due` says "other replicas skip them") then takes them
for crashed and sends them too, while the first replica is still working through its round:
two messages for one request with nothing having crashed. The clocks are moved instead of
waiting out the lease; the first replica's SMTP server holds its first answer until the second
replica's round is over."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import yaml
from aiosmtpd.controller import Controller

from services.dispatch.dispatcher import Dispatcher
from services.dispatch.mailer import Mailer
from services.dispatch.plan import CampaignContact, requests_for_campaign
from services.dispatch.settings import DispatchSettings
from services.harness.dispatch_check import send_key
from services.harness.stack import free_port
from services.sandbox.methods import CONTACT
from shared.events import PortalRef, SurveyReady
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from tests.support.crm_sync import client_for, new_portal
from tests.support.paths import EXAMPLE_CONFIG

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
PORTAL = "m1"
ROUND = 10


class Server:
    """An SMTP server keeping each message's Message-ID; with `hold`, its first answer waits
    until `release`."""

    def __init__(self, *, hold: bool) -> None:
        self.message_ids: list[str] = []
        self.arrived = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        head = envelope.content.split(b"\r\n\r\n", 1)[0].decode()
        self.message_ids += [
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("message-id:")
        ]
        self.arrived.set()
        await asyncio.to_thread(self.released.wait, 30)
        return "250 OK"

    def __enter__(self) -> Server:
        self._controller.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.released.set()
        self._controller.stop()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    with Server(hold=True) as slow, Server(hold=False) as fast:
        yield slow, fast


@pytest.fixture
async def clean(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "TRUNCATE dispatch_sends, dispatch_optouts, dispatch_requests, dispatch_campaigns"
    )


def config() -> PortalConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["portal"]["timezone"] = "UTC"
    data["dispatch"] = {
        "channel": "email",
        "language": "en",
        "email": {"sender": "Demo <nps@example.com>"},
        "window": {"start": "00:00", "end": "23:59:59"},
    }
    return parse_portal_config(data)


async def test_a_second_replica_never_sends_what_a_slow_round_of_the_first_is_still_sending(
    pool: asyncpg.Pool, servers: tuple[Server, Server], clean: None
) -> None:
    slow, fast = servers
    portal = new_portal(contacts=40)
    reachable = [
        int(cid) for cid, record in portal.crm.records(CONTACT).items() if record.get("EMAIL")
    ]
    settings = DispatchSettings(batch=ROUND, _env_file=None)
    the_config = config()
    outbox = Outbox()

    def replica(port: int, now: datetime) -> Dispatcher:
        mail = settings.model_copy(update={"smtp_port": port})
        return Dispatcher(
            pool,
            outbox,
            the_config,
            portal=client_for(portal),
            mailer=Mailer(mail),
            settings=mail,
            clock=lambda: now,
        )

    first = replica(slow.port, NOW)
    contacts = [CampaignContact(contact_id=c) for c in reachable[:ROUND]]
    wanted = requests_for_campaign("c-1", "Laser A", contacts, the_config)
    async with outbox.transaction(pool) as conn:
        asked = await first.ask(conn, PORTAL, wanted, None)
    for row in asked.scheduled:
        await first.on_ready(
            SurveyReady(
                correlation_id="x",
                request_id=row.request_id,
                portal=PortalRef(member_id=PORTAL),
                url=f"http://survey.test/s/{row.request_id}",
                optout_url=f"http://survey.test/s/{row.request_id}/optout",
                company="Demo Clinic Supply",
                expires_at=NOW + timedelta(days=30),
            )
        )

    round_one = asyncio.create_task(first.tick())
    assert await asyncio.to_thread(slow.arrived.wait, 30), "the first round sent nothing"
    later = NOW + timedelta(seconds=settings.lease_s + 1)  # the first round still under way
    await replica(fast.port, later).tick()
    slow.released.set()
    await round_one

    sends = Counter(send_key(mid) for mid in [*slow.message_ids, *fast.message_ids])
    assert len(sends) == ROUND
    assert {key: n for key, n in sends.items() if n > 1} == {}
