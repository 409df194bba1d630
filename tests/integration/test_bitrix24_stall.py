"""The shared rate budget holds through a portal stall: the sandbox portal, served by a real
uvicorn (real read timeouts), hangs every `crm.item.list` for a while and then recovers, while
ingest's item reader keeps asking for items through a client whose budget is in PostgreSQL.

Another process (its own connections, the same budget) calls the portal all along. The portal's
limit is a custom plan's 10 requests/s with a burst of 20, so that a few seconds of stall hold
back more requests than the burst, as twenty seconds do at the standard 2/s and 50."""

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ingest.hydrator import ItemReader
from services.sandbox.app import create_app
from services.sandbox.faults import Faults
from services.sandbox.limits import Limits
from services.sandbox.portal import QUERY_LIMIT_EXCEEDED, SandboxPortal
from services.sandbox.seed import make_answers, seed_demo
from shared.bitrix24 import Bitrix24Client, PgRateBudget
from shared.db import create_pool
from shared.portal_config import Rate
from tests.support import serving
from tests.support.paths import EXAMPLE_CONFIG

NPS = 1038
RATE = Rate(per_second=10, burst=20)
ITEMS = 100
ARRIVAL_GAP_S = 0.03  # one message at a time, all within the stall: each read alone
HANG_S = 4.0
READ_TIMEOUT_S = 3.0
STALL_S = 4.0
READ_SLOTS = 4
OTHER_GAP_S = 0.2


@dataclass
class ItemReads:
    """The `crm.item.list` requests the portal received: when, and how many ids each asked for."""

    received: list[tuple[float, int]] = field(default_factory=list)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def tapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not scope["path"].endswith("/crm.item.list.json"):
                await app(scope, receive, send)
                return
            arrived = time.monotonic()
            body = b""

            async def tap() -> Message:
                nonlocal body
                message = await receive()
                body += message.get("body", b"")
                return message

            await app(scope, tap, send)
            ids = json.loads(body)["filter"]["@id"]
            self.received.append((arrived, len(ids)))

        return tapped


@pytest.fixture
def portal() -> SandboxPortal:
    limits = Limits(per_second=RATE.per_second, burst=RATE.burst, operating_limit_s=None)
    portal = SandboxPortal(limits=limits)
    seed_demo(portal, config_path=EXAMPLE_CONFIG, contacts=3, seed=7)
    return portal


@pytest.fixture
async def webhook(portal: SandboxPortal, reads: ItemReads) -> AsyncIterator[str]:
    async with serving(reads.wrap(create_app(portal))) as url:
        yield f"{url}/rest/{portal.user_id}/{portal.secret}/"


@pytest.fixture
def budget_key() -> str:
    return f"stall-{uuid.uuid4().hex}"


@pytest.fixture
async def client(
    webhook: str, budget_key: str, pool: asyncpg.Pool
) -> AsyncIterator[Bitrix24Client]:
    """Ingest's client."""
    budget = PgRateBudget(pool, budget_key, RATE)
    async with Bitrix24Client(
        webhook, budget, read_timeout_s=READ_TIMEOUT_S, backoff_s=0.05, backoff_max_s=0.2
    ) as b24:
        yield b24


@pytest.fixture
async def other_client(webhook: str, budget_key: str, pg_dsn: str) -> AsyncIterator[Bitrix24Client]:
    """Another process calling the same portal (a crm_sync replica): its own connections to the
    same database, the same shared budget."""
    other_pool = await create_pool(pg_dsn, max_size=2)
    try:
        async with Bitrix24Client(webhook, PgRateBudget(other_pool, budget_key, RATE)) as b24:
            yield b24
    finally:
        await other_pool.close()


@pytest.fixture
def reads() -> ItemReads:
    return ItemReads()


@pytest.mark.timeout(90)
async def test_after_a_stall_the_portal_refuses_nothing_and_reads_go_out_batched(
    portal: SandboxPortal, client: Bitrix24Client, other_client: Bitrix24Client, reads: ItemReads
) -> None:
    item_ids = make_answers(portal, ITEMS, seed=3)
    reader = ItemReader(client, max_reads=READ_SLOTS)
    waited: dict[int, float] = {}
    reading = True

    async def other_process() -> int:
        """Calls the portal all along, unaffected by the hang, within the same budget."""
        calls = 0
        while reading:
            await other_client.call("crm.contact.list", {"select": ["ID"]})
            calls += 1
            await asyncio.sleep(OTHER_GAP_S)
        return calls

    async def read(item_id: int, delay: float) -> dict[str, Any] | None:
        await asyncio.sleep(delay)
        asked = time.monotonic()
        try:
            return await reader.get(NPS, item_id)
        finally:
            waited[item_id] = time.monotonic() - asked

    portal.faults.configure(Faults(hang_rate=1.0, hang_s=HANG_S, methods=["crm.item.list"]))
    other = asyncio.create_task(other_process())
    readers = [
        asyncio.create_task(read(item_id, index * ARRIVAL_GAP_S))
        for index, item_id in enumerate(item_ids)
    ]
    await asyncio.sleep(STALL_S)
    portal.faults.configure(Faults())
    recovered = time.monotonic()
    items = await asyncio.gather(*readers, return_exceptions=True)
    reading = False
    (other_calls,) = await asyncio.gather(other, return_exceptions=True)

    report = portal.calls_report()
    assert report["limit_errors"][QUERY_LIMIT_EXCEEDED] == 0, report["errors"]
    failed = [item for item in items if not isinstance(item, dict)]
    assert not failed, failed
    assert [item["id"] for item in items if isinstance(item, dict)] == item_ids
    assert isinstance(other_calls, int), other_calls
    assert other_calls >= STALL_S / OTHER_GAP_S / 2  # the other process went on meanwhile
    # After the recovery: the retries of the reads that were hung (one per read slot), then the
    # ids gathered meanwhile, 50 a request.
    after = [size for arrived, size in reads.received if arrived >= recovered]
    assert len(after) <= READ_SLOTS + math.ceil(ITEMS / 50), after
    assert max(after) == 50, after
    # A read waits no longer than the reads hung at the portal (their two attempts in the stall,
    # each ended by the read timeout) and one request more, not for wave after wave of hangs.
    assert max(waited.values()) < 2 * READ_TIMEOUT_S + 2.0, sorted(waited.values())[-5:]
