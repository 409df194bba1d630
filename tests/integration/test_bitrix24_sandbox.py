"""The client against the sandbox portal (ASGI, in process) with the budget in PostgreSQL."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import make_answers, seed_demo
from shared.bitrix24 import (
    Bitrix24Client,
    Command,
    NotFound,
    OperationTimeLimit,
    PermanentBitrix24Error,
    PgRateBudget,
    RateLimited,
)
from shared.db import create_pool
from shared.portal_config import EquipmentSegment, PortalConfig, Rate
from tests.support.paths import EXAMPLE_CONFIG

MakeClient = Callable[..., Bitrix24Client]


def base_url(portal: SandboxPortal) -> str:
    return f"http://sandbox/rest/{portal.user_id}/{portal.secret}/"


@pytest.fixture
async def second_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """Another process's connections to the same database."""
    other = await create_pool(pg_dsn, max_size=4)
    yield other
    await other.close()


@pytest.fixture
def portal_key() -> str:
    return f"sandbox-{uuid.uuid4().hex}"


@pytest.fixture
async def make_client(pool: asyncpg.Pool, portal_key: str) -> AsyncIterator[MakeClient]:
    """Clients of one sandbox portal whose budgets share the row `portal_key` in PostgreSQL;
    each gets its own ASGI app, as separate processes would."""
    clients: list[Bitrix24Client] = []

    def make(
        portal: SandboxPortal,
        rate: Rate | None,
        *,
        db: asyncpg.Pool | None = None,
        operating_limit_s: float | None = None,
        **options: Any,
    ) -> Bitrix24Client:
        budget = PgRateBudget(db or pool, portal_key, rate, operating_limit_s=operating_limit_s)
        transport = httpx.ASGITransport(app=create_app(portal))
        client = Bitrix24Client(base_url(portal), budget, transport=transport, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def limit_errors(portal: SandboxPortal) -> dict[str, int]:
    report: dict[str, int] = portal.calls_report()["limit_errors"]
    return report


async def test_two_processes_sharing_the_budget_never_hit_the_rate_limit(
    make_client: MakeClient, second_pool: asyncpg.Pool
) -> None:
    """Two writers, each alone allowed the portal's full rate, both hammering it at once:
    the shared bucket keeps the portal's own bucket from overflowing (zero 503s). The headroom
    (2 requests) covers 0.4 s between a request counted and its arrival, enough on a loaded CI
    machine (at 10 requests/s, 0.2 s was not)."""
    portal = SandboxPortal(limits=Limits(per_second=5, burst=10, operating_limit_s=None))
    rate = Rate(per_second=5, burst=10)
    writers = [make_client(portal, rate), make_client(portal, rate, db=second_pool)]

    async def work(client: Bitrix24Client, tag: str) -> list[bool]:
        leads = [
            Command(f"{tag}{i}", "crm.lead.add", {"fields": {"TITLE": f"{tag} {i}"}})
            for i in range(100)
        ]
        reads = asyncio.gather(*(client.call("crm.contact.fields") for _ in range(20)))
        writes = asyncio.gather(*(client.batch(leads[i : i + 50]) for i in range(0, 100, 50)))
        fields, batches = await asyncio.gather(reads, writes)
        return ["ID" in f.result for f in fields] + [b.ok(n) for b in batches for n in b.results]

    done = await asyncio.gather(work(writers[0], "a"), work(writers[1], "b"))
    assert [len(d) for d in done] == [120, 120]
    assert all(all(d) for d in done)
    assert limit_errors(portal)["QUERY_LIMIT_EXCEEDED"] == 0
    assert portal.calls_report()["requests"] == 2 * (20 + 2)
    assert len(portal.crm.records(1)) == 200


async def test_a_503_is_retried_and_slows_the_shared_bucket(
    make_client: MakeClient, pool: asyncpg.Pool, portal_key: str
) -> None:
    """A budget that believes in a far larger rate than the portal's: the portal refuses,
    the client backs off, slows the shared bucket, and every call still succeeds."""
    portal = SandboxPortal(limits=Limits(per_second=5, burst=3, operating_limit_s=None))
    client = make_client(
        portal, Rate(per_second=100, burst=50), max_attempts=12, backoff_s=0.1, backoff_max_s=0.5
    )
    responses = await asyncio.gather(*(client.call("crm.contact.fields") for _ in range(8)))
    assert all("ID" in response.result for response in responses)
    refused = limit_errors(portal)["QUERY_LIMIT_EXCEEDED"]
    assert refused >= 1
    assert portal.calls_report()["requests"] == 8 + refused
    row = await pool.fetchrow(
        "SELECT slow_until, extract(epoch FROM clock_timestamp())::float8 FROM rate_buckets"
        " WHERE portal = $1",
        portal_key,
    )
    assert row is not None
    slow_until, now = row
    assert slow_until > now  # every process sharing the bucket goes slower for a while


async def test_a_503_that_never_ends_surfaces_as_rate_limited(make_client: MakeClient) -> None:
    portal = SandboxPortal(limits=Limits(per_second=0.01, burst=1, operating_limit_s=None))
    client = make_client(portal, None, max_attempts=3, backoff_s=0.01, backoff_max_s=0.02)
    await client.call("crm.contact.fields")
    with pytest.raises(RateLimited):
        await client.call("crm.contact.fields")
    assert limit_errors(portal)["QUERY_LIMIT_EXCEEDED"] == 3


async def test_a_429_parks_only_that_method_for_every_process(
    make_client: MakeClient, second_pool: asyncpg.Pool
) -> None:
    portal = SandboxPortal(
        limits=Limits(per_second=None, operating_limit_s=2.0, cost_per_call_s=1.0)
    )
    first = make_client(portal, None)
    second = make_client(portal, None, db=second_pool)
    for _ in range(3):  # 3 s used of 2 s allowed: the portal blocks the next call
        await first.call("crm.contact.fields")
    with pytest.raises(OperationTimeLimit) as blocked:
        await first.call("crm.contact.fields")
    reset_at = blocked.value.reset_at
    assert reset_at is not None
    assert reset_at > portal.clock()
    assert limit_errors(portal)["OPERATION_TIME_LIMIT"] == 1
    requests = portal.calls_report()["requests"]

    with pytest.raises(OperationTimeLimit) as parked:
        await second.call("crm.contact.fields")  # the other process knows without asking
    assert parked.value.reset_at == pytest.approx(reset_at)
    batch = await second.batch(
        [
            Command("fields", "crm.contact.fields"),
            Command("userfields", "crm.contact.userfield.list"),
        ]
    )
    assert isinstance(batch.errors["fields"], OperationTimeLimit)
    assert batch.ok("userfields")  # other methods go on
    assert portal.calls_report()["requests"] == requests + 1  # just the batch
    assert limit_errors(portal)["OPERATION_TIME_LIMIT"] == 1


async def test_a_method_near_its_limit_is_parked_before_the_portal_blocks_it(
    make_client: MakeClient,
) -> None:
    portal = SandboxPortal(
        limits=Limits(per_second=None, operating_limit_s=10.0, cost_per_call_s=3.0)
    )
    client = make_client(portal, None, operating_limit_s=10.0)
    await client.batch([Command(f"c{i}", "crm.contact.fields") for i in range(2)])  # 6 s
    await client.call("crm.contact.fields")  # 9 s: at 90 % of the limit
    with pytest.raises(OperationTimeLimit):
        await client.call("crm.contact.fields")
    assert limit_errors(portal)["OPERATION_TIME_LIMIT"] == 0
    assert portal.calls_report()["requests"] == 2


@pytest.fixture
def demo(portal_config: PortalConfig) -> SandboxPortal:
    portal = SandboxPortal(limits=Limits.off())
    seed_demo(portal, EXAMPLE_CONFIG, contacts=120, seed=7)
    make_answers(portal, 75, seed=7)
    return portal


async def test_a_missing_item_is_not_found(
    make_client: MakeClient, demo: SandboxPortal, portal_config: PortalConfig
) -> None:
    client = make_client(demo, None)
    etype = portal_config.survey.entity_type_id
    with pytest.raises(NotFound) as item:
        await client.call("crm.item.get", {"entityTypeId": etype, "id": 999_999})
    assert item.value.status == 400
    with pytest.raises(NotFound):
        await client.call("crm.contact.get", {"ID": 999_999})  # legacy: empty error code
    with pytest.raises(PermanentBitrix24Error) as unknown:
        await client.call("crm.nosuch.method")
    assert unknown.value.code == "ERROR_METHOD_NOT_FOUND"


async def test_batch_reports_each_commands_outcome(
    make_client: MakeClient, demo: SandboxPortal, portal_config: PortalConfig
) -> None:
    client = make_client(demo, None)
    etype = portal_config.survey.entity_type_id
    contact_id = next(iter(demo.crm.records(CONTACT)))
    batch = await client.batch(
        [
            Command("contact", "crm.contact.get", {"ID": contact_id}),
            Command("item", "crm.item.get", {"entityTypeId": etype, "id": 999_999}),
            Command("task", "tasks.task.add", {"fields": {"TITLE": ""}}),
            Command("page", "crm.contact.list", {"select": ["ID"]}),
            Command("ref", "crm.contact.get", {"ID": "$result[page][0][ID]"}),
        ]
    )
    assert batch.results["contact"]["ID"] == str(contact_id)
    assert isinstance(batch.errors["item"], NotFound)
    assert type(batch.errors["task"]) is PermanentBitrix24Error
    assert batch.errors["task"].code == "ERROR_CORE"
    assert (batch.totals["page"], batch.nexts["page"]) == (120, 50)
    assert batch.results["ref"]["ID"] == batch.results["page"][0]["ID"]
    assert set(batch.times) >= {"contact", "page", "ref"}


async def test_list_all_pages_through_every_item(
    make_client: MakeClient, demo: SandboxPortal, portal_config: PortalConfig
) -> None:
    client = make_client(demo, None)
    etype = portal_config.survey.entity_type_id
    segment = portal_config.survey.segments[1]
    assert isinstance(segment, EquipmentSegment)
    score = segment.score_field
    items = [
        item
        async for item in client.list_all(
            "crm.item.list",
            {"entityTypeId": etype, "useOriginalUfNames": "Y", "select": [score]},
        )
    ]
    ids = [item["id"] for item in items]
    assert ids == sorted(demo.crm.records(etype))
    assert all(score in item for item in items)
    contacts = [c async for c in client.list_all("crm.contact.list", id_field="ID", items_key=None)]
    assert [int(c["ID"]) for c in contacts] == sorted(demo.crm.records(CONTACT))
    assert len(contacts) == 120
