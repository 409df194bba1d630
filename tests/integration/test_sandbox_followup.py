"""What the follow-up reads and what people do on the sandbox portal, over HTTP (ASGI in
process): the lead statuses with their semantics, a lead's status changed by `crm.lead.update`,
a task's by `tasks.task.update`/`start`/`complete` (with `changedDate` and `closedDate` on the
portal's clock), reads by an id filter, and `POST /sandbox/handle` acting on what b24-nps
created."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.timing import iso
from tests.support import FakeClock

SECRET = "f0ll0wupw3bh00k"
T0 = 1_760_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def portal(clock: FakeClock) -> SandboxPortal:
    portal = SandboxPortal(secret=SECRET, clock=clock, limits=Limits.off())
    portal.crm.add_user(17, "Olga", "Service")
    return portal


@pytest.fixture
async def client(portal: SandboxPortal) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(portal))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        yield client


async def call(client: httpx.AsyncClient, method: str, params: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/rest/1/{SECRET}/{method}", json=params)


async def ok(client: httpx.AsyncClient, method: str, params: dict[str, Any]) -> Any:
    response = await call(client, method, params)
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def lead(client: httpx.AsyncClient, *, ours: bool = True) -> int:
    fields: dict[str, Any] = {"TITLE": "NPS 3/10, service request", "ASSIGNED_BY_ID": 17}
    if ours:
        fields.update(ORIGIN_ID="a1:service", ORIGINATOR_ID="b24-nps")
    return int(await ok(client, "crm.lead.add", {"fields": fields}))


async def task(client: httpx.AsyncClient, *, ours: bool = True) -> int:
    fields: dict[str, Any] = {"TITLE": "Call the detractor", "RESPONSIBLE_ID": 17}
    if ours:
        fields["XML_ID"] = "a1:task"
    result = await ok(client, "tasks.task.add", {"fields": fields})
    return int(result["task"]["id"])


async def test_lead_statuses_are_listed_with_their_semantics(client: httpx.AsyncClient) -> None:
    rows = await ok(client, "crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}})
    assert [(r["STATUS_ID"], r["SEMANTICS"], r["EXTRA"]["SEMANTICS"]) for r in rows] == [
        ("NEW", None, "process"),
        ("IN_PROCESS", None, "process"),
        ("PROCESSED", None, "process"),
        ("CONVERTED", "S", "success"),
        ("JUNK", "F", "failure"),
    ]
    everything = await ok(client, "crm.status.list", {})
    assert everything[-1]["ENTITY_ID"].startswith("DEAL_STAGE")


async def test_a_lead_s_status_changes_by_crm_lead_update_on_the_portal_s_clock(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    lead_id = await lead(client)
    clock.now += 3600
    assert await ok(client, "crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "JUNK"}})
    (row,) = await ok(
        client,
        "crm.lead.list",
        {"filter": {"@ID": [lead_id, 999]}, "select": ["ID", "STATUS_ID", "DATE_MODIFY"]},
    )
    assert (row["STATUS_ID"], row["DATE_MODIFY"]) == ("JUNK", iso(T0 + 3600))

    refused = await call(client, "crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "X"}})
    assert refused.status_code == 400
    assert "STATUS_ID" in refused.json()["error_description"]
    missing = await call(client, "crm.lead.update", {"id": 999, "fields": {"TITLE": "x"}})
    assert missing.status_code == 400


async def test_a_task_is_started_completed_and_reopened_with_its_dates(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    task_id = await task(client)
    select = {"select": ["ID", "STATUS", "CHANGED_DATE", "CLOSED_DATE"]}
    clock.now += 600
    started = await ok(client, "tasks.task.start", {"taskId": task_id})
    assert (started["task"]["status"], started["task"]["closedDate"]) == ("3", None)
    clock.now += 600
    await ok(client, "tasks.task.complete", {"taskId": task_id})
    listed = await ok(client, "tasks.task.list", {"filter": {"ID": [task_id]}, **select})
    assert listed["tasks"] == [
        {
            "id": str(task_id),
            "status": "5",
            "changedDate": iso(T0 + 1200),
            "closedDate": iso(T0 + 1200),
        }
    ]
    clock.now += 600
    reopened = await ok(client, "tasks.task.update", {"taskId": task_id, "fields": {"STATUS": 2}})
    assert (reopened["task"]["status"], reopened["task"]["closedDate"]) == ("2", None)
    assert reopened["task"]["changedDate"] == iso(T0 + 1800)

    bad = await call(client, "tasks.task.update", {"taskId": task_id, "fields": {"STATUS": 9}})
    assert bad.status_code == 400
    missing = await call(client, "tasks.task.complete", {"taskId": 999})
    assert missing.status_code == 400


async def test_handle_acts_on_the_oldest_leads_and_tasks_b24_nps_created(
    client: httpx.AsyncClient, portal: SandboxPortal
) -> None:
    first, second, foreign = await lead(client), await lead(client), await lead(client, ours=False)
    ours, other = await task(client), await task(client, ours=False)

    response = await client.post("/sandbox/handle", params={"leads": 1, "tasks": 5})
    assert response.json() == {"leads": [first], "tasks": [ours]}
    response = await client.post(
        "/sandbox/handle", params={"leads": 5, "tasks": 5, "to": "in_work"}
    )
    assert response.json() == {"leads": [second], "tasks": []}  # the closed task stays
    leads = {row["ID"]: row["STATUS_ID"] for row in portal.crm.records(1).values()}
    assert leads == {first: "CONVERTED", second: "IN_PROCESS", foreign: "NEW"}
    assert portal.state.tasks[ours]["STATUS"] == 5
    assert portal.state.tasks[other]["STATUS"] == 2

    chosen = await client.post("/sandbox/handle", params={"lead": [foreign], "to": "junk"})
    assert chosen.json() == {"leads": [foreign], "tasks": []}
    missing = await client.post("/sandbox/handle", params={"task": [404]})
    assert (missing.status_code, missing.json()["detail"]) == (404, "the portal has no task 404")
