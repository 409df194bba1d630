"""Two portals served by one set of pipeline handlers (issue #22): ingest's hydrator, scoring,
the router and crm_sync, wired as `nps run` wires them but given two portals' configurations
and clients (`shared/portals.py`), against two named portals of one sandbox process over HTTP,
real RabbitMQ and PostgreSQL. Each portal's answers produce its own rows and its own writes
only; an event of a portal the deployment does not serve is dead-lettered, naming it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
from aio_pika.abc import AbstractChannel

from services.crm_sync.entities import task_marker
from services.crm_sync.main import wire as crm_sync_wire
from services.ingest.main import subscribe_hydrator
from services.ops.dlq import list_dead_letters
from services.router.main import wire as router_wire
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT, LEAD
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox, portal_factory
from services.sandbox.seed import add_answer_items
from services.scoring.main import wire as scoring_wire
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.events import PortalRef, WebhookReceived
from shared.messaging import make_broker, publish
from shared.portal_config import PortalConfig, load_portal_config
from shared.portals import PortalClients, PortalConfigs
from shared.service import Runtime, serve
from shared.settings import Settings
from shared.topology import INGEST_HYDRATE
from tests.support import serving
from tests.support.paths import EXAMPLE_CONFIG

NPS = 1038
NAMES = ("alpha", "beta")
SCORES = (2, 7, 9)
"""A detractor (service lead and task), a passive and a promoter (marketing lead); each a
contact patch."""
TIMEOUT_S = 60.0


def two_portal_sandbox() -> Sandbox:
    default = SandboxPortal(limits=Limits.off())
    sandbox = Sandbox(
        default,
        factory=portal_factory(seed=str(EXAMPLE_CONFIG), clock=default.clock, seed_path=Path),
    )
    for name in NAMES:
        sandbox.add(PortalSpec(name=name, contacts=5, sales=0, limits=Limits.off()))
    return sandbox


def portal_of(sandbox: Sandbox, name: str) -> SandboxPortal:
    host = sandbox.get(name)
    assert host is not None
    return host.portal


def config_for(member_id: str) -> PortalConfig:
    config = load_portal_config(EXAMPLE_CONFIG)
    pinned = config.portal.model_copy(update={"member_id": member_id})
    return config.model_copy(update={"portal": pinned})


@contextlib.asynccontextmanager
async def pipeline(
    settings: Settings, configs: PortalConfigs, clients: PortalClients
) -> AsyncIterator[None]:
    """ingest's hydrator, scoring, router and crm_sync in one service process, serving the
    portals of `configs` with the clients of `clients`."""

    async def wire(runtime: Runtime) -> None:
        runtime.configs, runtime.clients = configs, clients
        subscribe_hydrator(runtime)
        await scoring_wire(runtime)
        await router_wire(runtime)
        await crm_sync_wire(runtime)

    stop = asyncio.Event()
    task = asyncio.create_task(serve("portals", settings, wire, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def received(portal: SandboxPortal, item_id: int) -> WebhookReceived:
    return WebhookReceived(
        correlation_id=f"two-portals-{item_id}",
        portal=PortalRef(member_id=portal.member_id, domain=portal.domain),
        source="event",
        event="ONCRMDYNAMICITEMADD",
        entity_type_id=NPS,
        item_id=item_id,
        ts=1,
    )


async def test_each_portals_answers_make_its_own_rows_and_writes_only(
    settings: Settings, pool: asyncpg.Pool, channel: AbstractChannel, amqp_url: str
) -> None:
    sandbox = two_portal_sandbox()
    portals = {name: portal_of(sandbox, name) for name in NAMES}
    keys = {name: portal.member_id for name, portal in portals.items()}
    await pool.execute("DELETE FROM outbox")
    items: dict[str, list[int]] = {}
    for name, portal in portals.items():
        contacts = sorted(portal.crm.records(CONTACT))[: len(SCORES)]
        items[name] = add_answer_items(
            portal,
            [
                {"TITLE": "answer", "CATEGORY_ID": 12, "CONTACT_ID": contact, "UF_CRM_5_SCORE": s}
                for contact, s in zip(contacts, SCORES, strict=True)
            ],
        )
        portal.take_outbox()
    assert not set(items["alpha"]) & set(items["beta"])

    async with serving(create_app(sandbox)) as url:
        configs = PortalConfigs({keys[name]: config_for(keys[name]) for name in NAMES})
        clients = PortalClients(
            {
                keys[name]: Bitrix24Client(
                    f"{url}/p/{name}/rest/{portal.user_id}/{portal.secret}/",
                    MemoryRateBudget(None),
                )
                for name, portal in portals.items()
            }
        )
        broker = make_broker(amqp_url)
        async with pipeline(settings, configs, clients):
            await broker.connect()
            try:
                for name, portal in portals.items():
                    for item_id in items[name]:
                        await publish(broker, received(portal, item_id))
                stranger = SandboxPortal(member_id="m-gamma", limits=Limits.off())
                await publish(broker, received(stranger, 5))
            finally:
                await broker.stop()

            async def all_written() -> bool:
                done = await pool.fetchval(
                    """SELECT count(*) FROM crm_actions a
                       JOIN router_actions r ON r.action_id::text = a.action_id
                       WHERE a.portal = ANY($1::text[]) AND a.state = 'done'""",
                    list(keys.values()),
                )
                routed = await pool.fetchval(
                    "SELECT count(*) FROM router_actions WHERE portal = ANY($1::text[])",
                    list(keys.values()),
                )
                # per portal: 3 contact patches, 2 service/task, 1 marketing
                return int(routed) == 2 * 6 and int(done) == int(routed)

            await until(all_written, "both portals' actions written")

            async def refused() -> bool:
                return len(await list_dead_letters(channel, [INGEST_HYDRATE.name])) == 1

            await until(refused, "the stranger's event dead-lettered")

        [stranger_letter] = await list_dead_letters(channel, [INGEST_HYDRATE.name])
        assert "'m-gamma' is not served" in stranger_letter.reason

    for name, portal in portals.items():
        key = keys[name]
        scored = await pool.fetch(
            "SELECT portal, item_id FROM scoring_answers WHERE item_id = ANY($1::bigint[])",
            items[name],
        )
        assert sorted((r["portal"], r["item_id"]) for r in scored) == [
            (key, item) for item in sorted(items[name])
        ]
        routed = await pool.fetch(
            "SELECT portal, answer_id FROM router_actions WHERE portal = $1", key
        )
        assert len(routed) == 6
        assert all(r["answer_id"].startswith(f"{key}:") for r in routed)
        actions = await pool.fetch(
            "SELECT action_id, action, entity_id, contact_id FROM crm_actions WHERE portal = $1",
            key,
        )
        assert sorted(r["action"] for r in actions) == sorted(
            ["contact"] * 3 + ["service", "task", "marketing"]
        )
        # Its leads and tasks are in its portal, and the other's are not.
        mine = {r["action_id"] for r in actions}
        leads = {lead["ORIGIN_ID"] for lead in portal.crm.records(LEAD).values()}
        assert {r["action_id"] for r in actions if r["action"] in ("service", "marketing")} <= (
            leads & mine
        )
        markers = {
            line
            for task in portal.state.tasks.values()
            for line in task["DESCRIPTION"].splitlines()
        }
        [task_action] = [r["action_id"] for r in actions if r["action"] == "task"]
        assert task_marker(task_action) in markers
        other = portals[next(n for n in NAMES if n != name)]
        assert not mine & {lead["ORIGIN_ID"] for lead in other.crm.records(LEAD).values()}
        # Its contact patches went to its own contacts only.
        patched = {r["contact_id"] for r in actions if r["action"] == "contact"}
        assert patched <= set(portal.crm.records(CONTACT))
        assert not patched & set(other.crm.records(CONTACT))
        writes = await pool.fetch(
            "SELECT DISTINCT portal FROM crm_contact_writes WHERE contact_id = ANY($1::bigint[])",
            list(patched),
        )
        assert {r["portal"] for r in writes} <= {key}
