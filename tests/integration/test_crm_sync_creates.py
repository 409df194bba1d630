"""Leads and tasks against the sandbox portal: their content, exactly once, 429 parking."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from services.crm_sync.creates import ActionBusyError, EntityWriter
from services.crm_sync.entities import ORIGINATOR
from services.sandbox.limits import Limits
from services.sandbox.methods import LEAD
from services.sandbox.portal import SandboxPortal
from shared.bitrix24 import MemoryRateBudget, OperationTimeLimit, PortalUnavailable
from shared.events import CrmWritten, RouteAction
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from tests.support.crm_sync import (
    SCORE,
    HookedTransport,
    answer,
    blank_laser,
    client_for,
    commands_of,
    contact,
    contacts_where,
    new_portal,
    portal_ref,
    route,
    writers,
)


def leads(portal: SandboxPortal) -> list[dict[str, object]]:
    return list(portal.crm.records(LEAD).values())


class CrashBeforeRecord(EntityWriter):
    """A writer whose process dies right after the portal created the entity."""

    async def _record_created(self, *_args: object, **_kwargs: object) -> CrmWritten:
        raise ConnectionResetError("the process died before recording the entity")


async def test_a_service_lead_names_product_and_score_and_binds_the_contact(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal), portal_config)
    the_answer = answer(portal_ref(), 3, score=2, comment="Cooling broke", service_request=True)
    action = route(the_answer, "service", {"title": "NPS 2, service request: Laser A"})

    event = await w.entities.create(action)

    assert event is not None
    assert (event.outcome, event.entity_type) == ("created", "lead")
    (lead,) = leads(portal)
    assert lead["ID"] == event.entity_id
    assert lead["TITLE"] == "NPS 2, service request: Laser A"
    assert lead["ASSIGNED_BY_ID"] == 17
    assert lead["CONTACT_ID"] == 3
    assert "Cooling broke" in str(lead["COMMENTS"])
    assert "Laser A" in str(lead["COMMENTS"])
    assert (lead["ORIGIN_ID"], lead["ORIGINATOR_ID"]) == (action.action_id, ORIGINATOR)


async def test_a_marketing_lead_goes_to_marketing(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal), portal_config)

    event = await w.entities.create(route(answer(portal_ref(), 2, score=10), "marketing"))

    assert event is not None
    (lead,) = leads(portal)
    assert lead["ASSIGNED_BY_ID"] == 23
    assert "10/10" in str(lead["TITLE"])
    assert "Laser A" in str(lead["TITLE"])


async def test_a_task_carries_score_comment_manager_deadline_and_bindings(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal), portal_config)
    the_answer = answer(portal_ref(), 4, score=1, comment="Never again", item_id=77)
    action = route(the_answer, "task", {"deadline_hours": 48})
    started = datetime.now(UTC)

    event = await w.entities.create(action)

    assert event is not None
    (task,) = portal.state.tasks.values()
    assert task["ID"] == event.entity_id
    assert task["RESPONSIBLE_ID"] == 5
    assert task["UF_CRM_TASK"] == ["C_4", "T40e_77"]
    description = str(task["DESCRIPTION"])
    for part in ("1/10", "Never again", "Laser A", "Anna Petrova (#31)"):
        assert part in description
    deadline = datetime.fromisoformat(str(task["DEADLINE"]))
    assert started + timedelta(hours=47) < deadline < started + timedelta(hours=49)


async def test_manager_names_are_read_once(pool: asyncpg.Pool, portal_config: PortalConfig) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal), portal_config)
    ref = portal_ref()

    for cid in (1, 2, 3):
        await w.entities.create(route(answer(ref, cid, score=2, item_id=700 + cid), "task"))

    assert len(portal.state.tasks) == 3
    assert len(portal.calls_report(method="user.get")["calls"]) == 1


@pytest.mark.parametrize("kind", ["service", "task"])
async def test_a_crash_between_the_call_and_the_record_creates_nothing_twice(
    pool: asyncpg.Pool, portal_config: PortalConfig, kind: str
) -> None:
    portal = new_portal(contacts=5)
    client = client_for(portal)
    action = route(answer(portal_ref(), 2, score=1, item_id=88), kind)
    crashing = CrashBeforeRecord(
        pool, Outbox(), writers(pool, client, portal_config).coalescer, portal_config
    )

    with pytest.raises(ConnectionResetError):
        await crashing.create(action)
    created = leads(portal) if kind == "service" else list(portal.state.tasks.values())
    assert len(created) == 1

    event = await writers(pool, client, portal_config).entities.create(action)

    assert event is not None
    assert event.outcome == "existing"
    after = leads(portal) if kind == "service" else list(portal.state.tasks.values())
    assert len(after) == 1
    assert event.entity_id == after[0]["ID"]


@pytest.mark.parametrize("kind", ["marketing", "task"])
async def test_a_lost_answer_to_a_create_is_looked_up_before_creating_again(
    pool: asyncpg.Pool, portal_config: PortalConfig, kind: str
) -> None:
    portal = new_portal(contacts=5)
    lost = False

    async def lose_answer(request: httpx.Request) -> None:
        nonlocal lost
        adds = [c for c in commands_of(request).values() if ".add?" in c]
        if adds and not lost:
            lost = True
            raise httpx.ReadTimeout("no answer in time", request=request)

    flaky = client_for(portal, transport=HookedTransport(portal, after=lose_answer))
    other_task = route(answer(portal_ref(), 3, score=1, item_id=99), kind)
    action = route(answer(portal_ref(), 3, score=1, item_id=99), kind)
    await writers(pool, client_for(portal), portal_config).entities.create(other_task)

    with pytest.raises(PortalUnavailable):
        await writers(pool, flaky, portal_config).entities.create(action)
    event = await writers(pool, client_for(portal), portal_config).entities.create(action)

    assert event is not None
    assert event.outcome == "existing"
    created = leads(portal) if kind == "marketing" else list(portal.state.tasks.values())
    assert len(created) == 2
    assert event.entity_id == created[1]["ID"]


async def test_a_done_action_again_calls_nothing_and_publishes_nothing_new(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal), portal_config)
    action = route(answer(portal_ref(), 2, score=10), "marketing")
    first = await w.entities.create(action)
    calls = portal.calls_report()["requests"]
    outbox = await pool.fetchval("SELECT count(*) FROM outbox")

    again = await w.entities.create(action)

    assert first is not None
    assert again is None
    assert portal.calls_report()["requests"] == calls
    assert await pool.fetchval("SELECT count(*) FROM outbox") == outbox
    assert len(leads(portal)) == 1


async def test_a_400_from_the_portal_is_permanent(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal), portal_config)
    action = route(answer(portal_ref(), 2, score=1), "task", {"responsible_id": 999})

    with pytest.raises(PermanentError, match="Responsible"):
        await w.entities.create(action)
    assert not portal.state.tasks
    error = await pool.fetchval(
        "SELECT last_error FROM crm_actions WHERE action_id = $1", action.action_id
    )
    assert "not found" in error


async def test_an_operation_time_limit_parks_only_that_method(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    limits = Limits(per_second=None, operating_limit_s=1.0, cost_per_call_s=0.6)
    portal = new_portal(contacts=20, limits=limits)
    w = writers(pool, client_for(portal, MemoryRateBudget(None)), portal_config)
    ref = portal_ref()

    def lead_action(n: int) -> RouteAction:
        return route(answer(ref, n, score=10, item_id=600 + n), "marketing")

    await w.entities.create(lead_action(1))
    await w.entities.create(lead_action(2))
    with pytest.raises(OperationTimeLimit):
        await w.entities.create(lead_action(3))
    adds_at_block = len(portal.calls_report(method="crm.lead.add")["calls"])
    cid = contacts_where(portal, blank_laser)[0]

    parked, patched = await asyncio.gather(
        w.entities.create(lead_action(4)),
        w.contacts.patch(route(answer(ref, cid, score=8))),
        return_exceptions=True,
    )

    assert isinstance(parked, OperationTimeLimit)
    assert parked.reset_at is not None
    assert isinstance(patched, CrmWritten)
    assert patched.outcome == "patched"
    assert contact(portal, cid)[SCORE] == "8"
    assert len(portal.calls_report(method="crm.lead.add")["calls"]) == adds_at_block
    assert len(leads(portal)) == 2


def slow_adds(portal: SandboxPortal) -> HookedTransport:
    """The portal takes its time over every create: a second copy of the message arrives while
    the first one's create is still on its way."""

    async def wait(request: httpx.Request) -> None:
        if any(".add?" in c for c in commands_of(request).values()):
            await asyncio.sleep(0.3)

    return HookedTransport(portal, before=wait)


def created_of(portal: SandboxPortal, kind: str) -> list[dict[str, object]]:
    return leads(portal) if kind == "marketing" else list(portal.state.tasks.values())


@pytest.mark.parametrize("kind", ["marketing", "task"])
async def test_two_copies_of_an_action_at_once_create_one_entity(
    pool: asyncpg.Pool, portal_config: PortalConfig, kind: str
) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal, transport=slow_adds(portal)), portal_config)
    action = route(answer(portal_ref(), 3, score=1), kind)

    events = await asyncio.gather(w.entities.create(action), w.entities.create(action))

    assert len(created_of(portal, kind)) == 1
    assert sorted(e is None for e in events) == [False, True]


@pytest.mark.parametrize("kind", ["marketing", "task"])
async def test_a_copy_another_replica_is_creating_is_retried_later(
    pool: asyncpg.Pool, portal_config: PortalConfig, kind: str
) -> None:
    portal = new_portal(contacts=5)
    first = writers(pool, client_for(portal, transport=slow_adds(portal)), portal_config)
    second = writers(pool, client_for(portal), portal_config)
    action = route(answer(portal_ref(), 3, score=1), kind)

    creating = asyncio.create_task(first.entities.create(action))
    await asyncio.sleep(0.1)
    with pytest.raises(ActionBusyError, match="is created elsewhere"):  # a retryable error
        await second.entities.create(action)
    assert await creating is not None
    assert await second.entities.create(action) is None

    assert len(created_of(portal, kind)) == 1
