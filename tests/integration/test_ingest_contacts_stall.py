"""Contact look-ups (`survey.manager: contact`) through a portal stall, against the sandbox portal:
the look-ups made while every read slot hangs gather into one `crm.contact.list` after it, and
fail together when that request fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from services.ingest.contacts import ContactManagers
from services.sandbox.app import create_app as sandbox_app
from services.sandbox.faults import Faults
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget, PortalUnavailable
from tests.support.paths import EXAMPLE_CONFIG

READ_SLOTS = 4
LOOKUPS = 20
ARRIVAL_GAP_S = 0.05  # longer than the 20 ms window: without the stall, each look-up alone
HANG_S = 2.5  # the look-ups all arrive within it
METHOD = "crm.contact.list"


@pytest.fixture
def portal() -> SandboxPortal:
    portal = SandboxPortal(limits=Limits.off())
    seed_demo(portal, config_path=EXAMPLE_CONFIG, contacts=0, seed=7)
    return portal


@pytest.fixture
async def b24(portal: SandboxPortal) -> AsyncIterator[Bitrix24Client]:
    """A client that does not retry, so each look-up's request reaches the portal once."""
    transport = httpx.ASGITransport(app=sandbox_app(portal))
    base_url = f"http://sandbox/rest/{portal.user_id}/{portal.secret}/"
    async with Bitrix24Client(
        base_url, MemoryRateBudget(None), transport=transport, max_attempts=1
    ) as client:
        yield client


def add_contacts(portal: SandboxPortal) -> dict[int, int]:
    """`LOOKUPS` contacts, each with its own responsible: contact id → responsible id."""
    managers = {}
    for n in range(LOOKUPS):
        contact_id = int(portal.crm.add(CONTACT, {"ASSIGNED_BY_ID": 100 + n}, method="test")["ID"])
        managers[contact_id] = 100 + n
    return managers


def requests(portal: SandboxPortal) -> int:
    return len(portal.calls_report(method=METHOD)["calls"])


async def look_up_one_by_one(
    contacts: ContactManagers, contact_ids: list[int]
) -> list[int | BaseException | None]:
    async def look_up(contact_id: int, delay: float) -> int | None:
        await asyncio.sleep(delay)
        return await contacts.responsible(contact_id)

    return await asyncio.gather(
        *(look_up(contact_id, n * ARRIVAL_GAP_S) for n, contact_id in enumerate(contact_ids)),
        return_exceptions=True,
    )


@pytest.mark.timeout(30)
async def test_contact_look_ups_during_a_stall_go_out_as_one_request_after_it(
    portal: SandboxPortal, b24: Bitrix24Client
) -> None:
    managers = add_contacts(portal)
    contacts = ContactManagers(b24, max_reads=READ_SLOTS)
    portal.faults.configure(Faults(hang_count=READ_SLOTS, hang_s=HANG_S, methods=[METHOD]))
    before = requests(portal)

    found = await look_up_one_by_one(contacts, list(managers))

    assert found == list(managers.values())
    # The first look-ups took the read slots and hung; all the others went in one request.
    assert requests(portal) - before == READ_SLOTS + 1


@pytest.mark.timeout(30)
async def test_contact_look_ups_gathered_in_a_stall_fail_together(
    portal: SandboxPortal, b24: Bitrix24Client
) -> None:
    managers = add_contacts(portal)
    contacts = ContactManagers(b24, max_reads=READ_SLOTS)
    portal.faults.configure(Faults(hang_count=READ_SLOTS, hang_s=HANG_S, methods=[METHOD]))
    before = requests(portal)

    lookups = asyncio.ensure_future(look_up_one_by_one(contacts, list(managers)))
    await asyncio.sleep(LOOKUPS * ARRIVAL_GAP_S + 0.1)  # all asked, the slots still hung
    portal.faults.configure(Faults(error_rate=1.0, methods=[METHOD]))
    found = await lookups

    assert all(isinstance(result, PortalUnavailable) for result in found), found
    # One error per request: the look-ups gathered behind the hung reads got that one's.
    assert requests(portal) - before == READ_SLOTS + 1
    assert len({id(error) for error in found}) == READ_SLOTS + 1
