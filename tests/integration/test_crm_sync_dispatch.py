"""Dispatch's commands carried out by crm_sync against the sandbox portal over HTTP, recorded in
the real PostgreSQL: each command once; a redelivery writes nothing; an uncertain outcome (a lost
answer, a crash between the call and the record) is recovered without a second deal, task or
trigger; a missing deal or contact is the outcome `failed`, never a dead letter. The last test
runs the service itself on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.dispatch import DispatchWriter
from services.crm_sync.main import wire
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.methods import DEAL
from services.sandbox.portal import SandboxPortal
from services.sandbox.schema import field
from services.sandbox.seed import open_nps_deals, seed_demo
from shared.bitrix24 import MemoryRateBudget, OperationTimeLimit, PortalUnavailable
from shared.events import (
    CallTask,
    CrmWritten,
    DispatchCommand,
    NewNpsDeal,
    PortalRef,
    PortalSend,
    WriteOutcome,
)
from shared.outbox import Outbox
from shared.service import serve
from shared.settings import SANDBOX_SECRET, SANDBOX_USER_ID, Settings
from shared.topology import EXCHANGE
from tests.support import capture
from tests.support.crm_sync import (
    CONFIG_PATH,
    HookedTransport,
    client_for,
    commands_of,
    new_portal,
    portal_ref,
)
from tests.support.servers import serving

LINK = "UF_CRM_NPS_LINK"
SALE_FIELD = "UF_CRM_NPS_SALE_DEAL"
TRIGGER = "nps_send"
NPS_FUNNEL = 20
NOW = datetime(2026, 3, 14, 10, 30, tzinfo=UTC)


def dispatch_portal(portal: SandboxPortal | None = None) -> SandboxPortal:
    """The demo portal with a link field on deals and the automation trigger configured."""
    portal = portal or new_portal(contacts=10)
    if LINK not in portal.crm.state.entity_types[DEAL].fields:
        portal.crm.add_user_field(DEAL, field(LINK, "string", "NPS survey link"))
    portal.state.trigger_codes.append(TRIGGER)
    return portal


@pytest.fixture
def portal() -> SandboxPortal:
    return dispatch_portal()


def writer(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    budget: MemoryRateBudget | None = None,
) -> DispatchWriter:
    client = client_for(portal, budget, transport)
    return DispatchWriter(
        pool, Outbox(), CommandCoalescer(client, window_s=0.01), clock=lambda: NOW
    )


def command(ref: PortalRef, request: uuid.UUID | None = None, **body: Any) -> DispatchCommand:
    return DispatchCommand(
        correlation_id=f"corr-{uuid.uuid4().hex[:8]}",
        command_id=f"cmd-{uuid.uuid4()}",
        request_id=request or uuid.uuid4(),
        portal=ref,
        **body,
    )


def nps_deal(ref: PortalRef, contact_id: int = 3, **extra: Any) -> DispatchCommand:
    return command(
        ref,
        nps_deal=NewNpsDeal(
            **{
                "category_id": NPS_FUNNEL,
                "title": "After the sale: customer 3",
                "contact_id": contact_id,
                "responsible_id": 32,
                "sale_deal_id": 1,
                "sale_deal_field": SALE_FIELD,
                **extra,
            }
        ),
    )


def url_for(request: uuid.UUID) -> str:
    return f"https://nps.example.com/s/{request.hex}"


def survey_send(ref: PortalRef, deal_id: int, **extra: Any) -> DispatchCommand:
    request = uuid.uuid4()
    send = {
        "deal_id": deal_id,
        "link_field": LINK,
        "url": url_for(request),
        "trigger": TRIGGER,
        "timeline_title": "NPS survey sent",
        "timeline_text": "The survey link went out through the portal's robots.",
        **extra,
    }
    return command(ref, request, survey_send=PortalSend(**send))


def call_task(ref: PortalRef, **extra: Any) -> DispatchCommand:
    task = {
        "responsible_id": 31,
        "title": "Call the customer about the survey",
        "description": "No answer after two reminders.",
        "deadline_hours": 24,
        "deal_id": 1,
        "contact_id": 3,
        **extra,
    }
    return command(ref, call_task=CallTask(**task))


def nps_deals(portal: SandboxPortal, request: uuid.UUID) -> list[dict[str, Any]]:
    return [
        deal
        for deal in portal.crm.records(DEAL).values()
        if deal["ORIGIN_ID"] == str(request) and deal["ORIGINATOR_ID"] == "b24-nps"
    ]


def triggers(portal: SandboxPortal, deal_id: int) -> list[dict[str, Any]]:
    return [run for run in portal.state.automation if run["entity_id"] == deal_id]


def log_messages(portal: SandboxPortal, deal_id: int) -> list[dict[str, Any]]:
    return [m for m in portal.state.log_messages if m["entityId"] == deal_id]


def link_writes(portal: SandboxPortal, deal_id: int) -> list[Any]:
    return [c.after for c in portal.crm.history(DEAL, deal_id) if c.field == LINK]


async def outbox_count(pool: asyncpg.Pool, command: DispatchCommand) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE body->>'action_id' = $1", command.command_id
    )
    return count


async def stored(pool: asyncpg.Pool, command: DispatchCommand) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT state, outcome, entity_type, entity_id, answer_id, attempts, details"
        " FROM crm_actions WHERE action_id = $1",
        command.command_id,
    )
    assert row is not None
    return row


class Lose:
    """An `after` hook: the first request carrying `method` is handled by the portal, but its
    answer never arrives (a timeout)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.lost = False

    async def __call__(self, request: httpx.Request) -> None:
        if self.lost or not any(
            c.startswith(f"{self.method}?") for c in commands_of(request).values()
        ):
            return
        self.lost = True
        raise httpx.ReadTimeout("no answer in time", request=request)


class CrashBeforeRecord(DispatchWriter):
    """A writer whose process dies right after the portal did the work, before the record."""

    async def _done(self, *_args: Any, **_kwargs: Any) -> CrmWritten:
        raise ConnectionResetError("the process died before recording the outcome")


def crash_writer(pool: asyncpg.Pool, portal: SandboxPortal) -> CrashBeforeRecord:
    client = client_for(portal)
    return CrashBeforeRecord(pool, Outbox(), CommandCoalescer(client, window_s=0.01))


def assert_written(
    event: CrmWritten | None,
    the_command: DispatchCommand,
    outcome: WriteOutcome,
    entity: tuple[str, int | None],
) -> CrmWritten:
    assert event is not None
    assert (event.outcome, event.entity_type, event.entity_id) == (outcome, *entity)
    assert event.action_id == the_command.command_id
    assert event.routing_key() == f"crm.written.{the_command.action}"
    assert event.details["request_id"] == str(the_command.request_id)
    return event


# --- nps_deal ---------------------------------------------------------------------------------


async def test_an_nps_deal_is_created_once_in_its_funnel_with_the_sale_and_the_request(
    pool: asyncpg.Pool, portal: SandboxPortal
) -> None:
    the_command = nps_deal(portal_ref(), company_id=None)
    w = writer(pool, portal)

    event = await w.carry_out(the_command)

    (deal,) = nps_deals(portal, the_command.request_id)
    assert_written(event, the_command, "created", ("deal", deal["ID"]))
    assert deal["CATEGORY_ID"] == NPS_FUNNEL
    assert deal["STAGE_ID"] == "C20:NEW"  # the funnel's first stage, left to the portal
    assert (deal["CONTACT_ID"], deal["ASSIGNED_BY_ID"], deal[SALE_FIELD]) == (3, 32, 1)
    assert deal["TITLE"] == "After the sale: customer 3"
    row = await stored(pool, the_command)
    assert (row["state"], row["outcome"], row["entity_id"]) == ("done", "created", deal["ID"])
    assert row["answer_id"] == str(the_command.request_id)
    assert await outbox_count(pool, the_command) == 1

    requests = portal.calls_report()["requests"]
    again = await w.carry_out(the_command)

    assert again is None
    assert portal.calls_report()["requests"] == requests
    assert await outbox_count(pool, the_command) == 1
    assert len(nps_deals(portal, the_command.request_id)) == 1


async def test_two_copies_of_a_command_at_once_create_one_nps_deal(
    pool: asyncpg.Pool, portal: SandboxPortal
) -> None:
    """An outbox row published again after a crash reaches crm_sync twice, both copies in
    flight together: the second waits for the first and finds its work done."""
    the_command = nps_deal(portal_ref(), company_id=None)
    w = writer(pool, portal)

    events = await asyncio.gather(w.carry_out(the_command), w.carry_out(the_command))

    (deal,) = nps_deals(portal, the_command.request_id)
    assert [event is None for event in events].count(False) == 1
    assert await outbox_count(pool, the_command) == 1
    assert deal["CATEGORY_ID"] == NPS_FUNNEL


async def test_a_lost_answer_to_the_deal_add_finds_the_deal_instead_of_adding_another(
    pool: asyncpg.Pool, portal: SandboxPortal
) -> None:
    the_command = nps_deal(portal_ref())
    lose = Lose("crm.item.add")
    flaky = writer(pool, portal, transport=HookedTransport(portal, after=lose))

    with pytest.raises(PortalUnavailable):
        await flaky.carry_out(the_command)
    assert lose.lost
    assert len(nps_deals(portal, the_command.request_id)) == 1

    event = await writer(pool, portal).carry_out(the_command)

    (deal,) = nps_deals(portal, the_command.request_id)
    assert_written(event, the_command, "existing", ("deal", deal["ID"]))
    assert (await stored(pool, the_command))["attempts"] == 2


async def test_a_crash_after_the_deal_add_finds_the_deal_on_the_next_attempt(
    pool: asyncpg.Pool, portal: SandboxPortal
) -> None:
    the_command = nps_deal(portal_ref())

    with pytest.raises(ConnectionResetError):
        await crash_writer(pool, portal).carry_out(the_command)
    event = await writer(pool, portal).carry_out(the_command)

    (deal,) = nps_deals(portal, the_command.request_id)
    assert_written(event, the_command, "existing", ("deal", deal["ID"]))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"contact_id": 9999}, "contact 9999 (nps_deal.contact_id) does not exist"),
        ({"category_id": 77}, "deal category 77 (nps_deal.category_id) has no stages"),
    ],
)
async def test_an_nps_deal_for_a_missing_contact_or_funnel_fails_with_the_reason(
    pool: asyncpg.Pool, portal: SandboxPortal, extra: dict[str, Any], reason: str
) -> None:
    the_command = nps_deal(portal_ref(), **extra)
    before = len(portal.crm.records(DEAL))

    event = assert_written(
        await writer(pool, portal).carry_out(the_command), the_command, "failed", ("deal", None)
    )

    assert reason in event.details["reason"]
    assert len(portal.crm.records(DEAL)) == before
    assert (await stored(pool, the_command))["state"] == "done"
    assert await outbox_count(pool, the_command) == 1


# --- survey_send ------------------------------------------------------------------------------


@pytest.fixture
def deal_id(portal: SandboxPortal) -> int:
    (opened,) = open_nps_deals(portal, 1, seed=3)
    return opened


async def test_a_send_writes_the_link_fires_the_trigger_and_adds_a_timeline_entry_once(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    the_command = survey_send(portal_ref(), deal_id, reminder=0)
    w = writer(pool, portal)
    requests = portal.calls_report()["requests"]

    event = assert_written(await w.carry_out(the_command), the_command, "sent", ("deal", deal_id))

    send = the_command.survey_send
    assert send is not None
    assert portal.crm.records(DEAL)[deal_id][LINK] == send.url
    (run,) = triggers(portal, deal_id)
    assert (run["target"], run["code"], run["matched"]) == (f"DEAL_{deal_id}", TRIGGER, True)
    (entry,) = log_messages(portal, deal_id)
    assert (entry["title"], entry["entityTypeId"]) == ("NPS survey sent", DEAL)
    assert event.details["timeline_id"] == entry["id"]
    assert (event.details["trigger"], event.details["reminder"]) == (TRIGGER, 0)
    # one read, then the send in a request of its own
    assert portal.calls_report()["requests"] == requests + 2

    again = await w.carry_out(the_command)

    assert again is None
    assert portal.calls_report()["requests"] == requests + 2
    assert len(triggers(portal, deal_id)) == 1
    assert len(log_messages(portal, deal_id)) == 1
    assert await outbox_count(pool, the_command) == 1


async def test_a_lost_answer_to_the_send_is_recovered_from_the_link_without_a_second_trigger(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    the_command = survey_send(portal_ref(), deal_id)
    lose = Lose("crm.automation.trigger")
    flaky = writer(pool, portal, transport=HookedTransport(portal, after=lose))

    with pytest.raises(PortalUnavailable):
        await flaky.carry_out(the_command)
    assert lose.lost
    assert len(triggers(portal, deal_id)) == 1

    event = assert_written(
        await writer(pool, portal).carry_out(the_command), the_command, "sent", ("deal", deal_id)
    )

    assert event.details["recovered"] is True
    assert len(triggers(portal, deal_id)) == 1
    assert len(log_messages(portal, deal_id)) == 1
    assert len(link_writes(portal, deal_id)) == 1


async def test_a_crash_after_the_send_is_recovered_without_a_second_trigger(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    the_command = survey_send(portal_ref(), deal_id)

    with pytest.raises(ConnectionResetError):
        await crash_writer(pool, portal).carry_out(the_command)
    event = await writer(pool, portal).carry_out(the_command)

    assert_written(event, the_command, "sent", ("deal", deal_id))
    assert len(triggers(portal, deal_id)) == 1
    assert len(log_messages(portal, deal_id)) == 1


async def test_a_send_that_never_reached_the_portal_is_sent_on_the_next_attempt(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    the_command = survey_send(portal_ref(), deal_id)

    async def refuse_connection(request: httpx.Request) -> None:
        if any(c.startswith("crm.automation.trigger?") for c in commands_of(request).values()):
            raise httpx.ConnectError("connection refused", request=request)

    down = writer(pool, portal, transport=HookedTransport(portal, before=refuse_connection))
    with pytest.raises(PortalUnavailable):
        await down.carry_out(the_command)
    assert not triggers(portal, deal_id)

    event = assert_written(
        await writer(pool, portal).carry_out(the_command), the_command, "sent", ("deal", deal_id)
    )

    assert "recovered" not in event.details
    assert len(triggers(portal, deal_id)) == 1


async def test_a_trigger_that_did_not_run_after_the_link_was_written_is_fired_on_the_retry(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    """The link went in, the trigger was held back (its method parked for the portal's
    operating-time limit): the link field no longer tells, so the retry sends again."""
    the_command = survey_send(portal_ref(), deal_id)
    budget = MemoryRateBudget(None)
    await budget.operation_limit_hit("crm.automation.trigger", time.time() + 600)

    with pytest.raises(OperationTimeLimit):
        await writer(pool, portal, budget=budget).carry_out(the_command)
    send = the_command.survey_send
    assert send is not None
    assert portal.crm.records(DEAL)[deal_id][LINK] == send.url
    assert not triggers(portal, deal_id)

    event = await writer(pool, portal).carry_out(the_command)

    assert_written(event, the_command, "sent", ("deal", deal_id))
    assert len(triggers(portal, deal_id)) == 1


async def test_a_reminder_with_the_same_link_fires_the_trigger_again(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    first = survey_send(portal_ref(), deal_id)
    send = first.survey_send
    assert send is not None
    reminder = command(
        first.portal,
        first.request_id,
        survey_send=send.model_copy(update={"reminder": 1, "timeline_title": None}),
    )
    w = writer(pool, portal)

    await w.carry_out(first)
    event = assert_written(await w.carry_out(reminder), reminder, "sent", ("deal", deal_id))

    assert len(triggers(portal, deal_id)) == 2
    assert len(log_messages(portal, deal_id)) == 1
    assert "timeline_id" not in event.details


async def test_a_send_by_stage_moves_the_deal_and_one_of_another_funnel_fails(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    by_stage = survey_send(portal_ref(), deal_id, trigger=None, stage="C20:WON")
    other_funnel = survey_send(portal_ref(), deal_id, trigger=None, stage="WON")
    w = writer(pool, portal)

    refused = assert_written(
        await w.carry_out(other_funnel), other_funnel, "failed", ("deal", deal_id)
    )
    assert "belongs to deal category 0" in refused.details["reason"]
    assert portal.crm.records(DEAL)[deal_id][LINK] is None
    assert portal.crm.records(DEAL)[deal_id]["STAGE_ID"] == "C20:NEW"

    event = assert_written(await w.carry_out(by_stage), by_stage, "sent", ("deal", deal_id))

    assert event.details["stage"] == "C20:WON"
    deal = portal.crm.records(DEAL)[deal_id]
    assert deal["STAGE_ID"] == "C20:WON"
    assert deal[LINK] == url_for(by_stage.request_id)
    assert not triggers(portal, deal_id)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"deal_id": 99999}, "deal 99999 (survey_send.deal_id) does not exist"),
        ({"link_field": "UF_CRM_NO_SUCH"}, "has no field UF_CRM_NO_SUCH"),
    ],
)
async def test_a_send_that_cannot_be_carried_out_fails_with_the_reason_and_fires_nothing(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    deal_id: int,
    extra: dict[str, Any],
    reason: str,
) -> None:
    target = extra.pop("deal_id", deal_id)
    the_command = survey_send(portal_ref(), target, **extra)

    event = assert_written(
        await writer(pool, portal).carry_out(the_command), the_command, "failed", ("deal", target)
    )

    assert reason in event.details["reason"]
    assert not portal.state.automation
    assert not portal.state.log_messages
    assert not link_writes(portal, deal_id)


# --- call_task --------------------------------------------------------------------------------


async def test_a_call_task_is_created_once_for_the_responsible_bound_to_deal_and_contact(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    the_command = call_task(portal_ref(), deal_id=deal_id, deadline_hours=48)
    w = writer(pool, portal)

    event = await w.carry_out(the_command)

    (task,) = portal.state.tasks.values()
    assert_written(event, the_command, "created", ("task", task["ID"]))
    assert task["RESPONSIBLE_ID"] == 31
    assert task["TITLE"] == "Call the customer about the survey"
    assert task["UF_CRM_TASK"] == [f"D_{deal_id}", "C_3"]
    assert task["XML_ID"] == the_command.command_id
    assert str(task["DESCRIPTION"]).startswith("No answer after two reminders.")
    assert datetime.fromisoformat(str(task["DEADLINE"])) == NOW + timedelta(hours=48)

    assert await w.carry_out(the_command) is None
    assert len(portal.state.tasks) == 1
    assert await outbox_count(pool, the_command) == 1


async def test_a_lost_answer_to_the_task_add_finds_the_task_instead_of_adding_another(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int
) -> None:
    earlier = call_task(portal_ref(), deal_id=deal_id)
    the_command = call_task(portal_ref(), deal_id=deal_id)
    await writer(pool, portal).carry_out(earlier)
    lose = Lose("tasks.task.add")

    with pytest.raises(PortalUnavailable):
        await writer(pool, portal, transport=HookedTransport(portal, after=lose)).carry_out(
            the_command
        )
    event = await writer(pool, portal).carry_out(the_command)

    tasks = sorted(portal.state.tasks.values(), key=lambda t: int(t["ID"]))
    assert len(tasks) == 2
    assert_written(event, the_command, "existing", ("task", tasks[1]["ID"]))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"responsible_id": 999}, "Responsible"),
        ({"deal_id": 99999}, "deal 99999 (call_task.deal_id) does not exist"),
        ({"deal_id": None, "contact_id": 9999}, "contact 9999 (call_task.contact_id)"),
    ],
)
async def test_a_call_task_that_cannot_be_created_fails_with_the_reason(
    pool: asyncpg.Pool, portal: SandboxPortal, deal_id: int, extra: dict[str, Any], reason: str
) -> None:
    the_command = call_task(portal_ref(), **{"deal_id": deal_id, **extra})

    event = assert_written(
        await writer(pool, portal).carry_out(the_command), the_command, "failed", ("task", None)
    )

    assert reason in event.details["reason"]
    assert not portal.state.tasks


# --- the service ------------------------------------------------------------------------------


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[SandboxPortal, Settings]]:
    """A portal served over HTTP on a free port, and settings pointing crm_sync at it."""
    portal = SandboxPortal(user_id=SANDBOX_USER_ID, secret=SANDBOX_SECRET, limits=Limits.off())
    seed_demo(portal, config_path=CONFIG_PATH, contacts=10, seed=42)
    dispatch_portal(portal)
    async with serving(create_app(portal)) as url:
        port = int(url.rsplit(":", 1)[1])
        yield (
            portal,
            settings.model_copy(update={"sandbox_host": "127.0.0.1", "sandbox_port": port}),
        )


async def publish(channel: AbstractChannel, the_command: DispatchCommand) -> None:
    exchange = await channel.get_exchange(EXCHANGE)
    await exchange.publish(
        aio_pika.Message(
            the_command.model_dump_json().encode(),
            message_id=str(the_command.event_id),
            correlation_id=the_command.correlation_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=the_command.routing_key(),
    )


async def test_the_service_answers_each_command_with_its_written_event_once(
    served: tuple[SandboxPortal, Settings], channel: AbstractChannel
) -> None:
    portal, settings = served
    ref = portal_ref()
    (deal_id,) = open_nps_deals(portal, 1, seed=4)
    commands = [
        nps_deal(ref),
        survey_send(ref, deal_id),
        call_task(ref, deal_id=deal_id),
        survey_send(ref, 99999),
    ]
    wanted = {c.command_id: c for c in commands}
    stop = asyncio.Event()
    async with capture(channel, "crm.written.#") as captured:
        service = asyncio.create_task(serve("crm_sync", settings, wire, stop=stop, prefetch=1))
        try:
            for the_command in [*commands, *commands]:  # each delivered twice
                await publish(channel, the_command)

            def mine() -> list[CrmWritten]:
                events = (CrmWritten.model_validate(b) for b in captured.bodies)
                return [event for event in events if event.action_id in wanted]

            async with asyncio.timeout(30):
                while {event.action_id for event in mine()} != set(wanted):
                    await asyncio.sleep(0.05)
            sentinel = call_task(ref, deal_id=deal_id)  # handled after every redelivery
            wanted[sentinel.command_id] = sentinel
            await publish(channel, sentinel)
            async with asyncio.timeout(30):
                while {event.action_id for event in mine()} != set(wanted):
                    await asyncio.sleep(0.05)
            events = mine()
        finally:
            stop.set()
            await service

    assert len(events) == len(wanted)
    outcomes = {event.action_id: (event.routing_key(), event.outcome) for event in events}
    assert [outcomes[c.command_id] for c in commands] == [
        ("crm.written.nps_deal", "created"),
        ("crm.written.survey_send", "sent"),
        ("crm.written.call_task", "created"),
        ("crm.written.survey_send", "failed"),
    ]
    assert len(triggers(portal, deal_id)) == 1
    assert len(nps_deals(portal, commands[0].request_id)) == 1
    assert len(portal.state.tasks) == 2
