"""The legacy-safe contact patch against the sandbox portal and its legacy demo data."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from services.crm_sync import contacts as contacts_module
from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.contacts import ContactWriter
from services.crm_sync.policy import Version, history_entry
from services.crm_sync.store import Changes, LedgerRow, load_ledger, record
from services.crm_sync.undo import undo_write
from services.sandbox.methods import CONTACT
from shared.bitrix24 import PortalUnavailable
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from tests.support.crm_sync import (
    DATE,
    HISTORY,
    LASER_FIELDS,
    NOW,
    SCORE,
    HookedTransport,
    answer,
    audit_rows,
    blank_laser,
    changes,
    client_for,
    commands_of,
    conflict_rows,
    contact,
    contacts_where,
    days,
    ledger_rows,
    legacy_laser,
    new_portal,
    portal_ref,
    route,
    writers,
)


async def test_empty_fields_are_written_and_audited(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    the_answer = answer(ref, cid, score=9)

    event = await w.contacts.patch(route(the_answer))

    assert event is not None
    assert event.outcome == "patched"
    assert (event.entity_type, event.entity_id) == ("contact", cid)
    after = contact(portal, cid)
    assert (after[SCORE], after[DATE], after[HISTORY]) == (
        "9",
        "2026-03-14",
        [history_entry(the_answer)],
    )
    assert {field for field, *_ in changes(portal, cid)} == set(LASER_FIELDS)
    audit = await audit_rows(pool, ref, cid)
    assert [(row["field"], row["before"], row["after"]) for row in audit] == [
        (SCORE, None, "9"),
        (DATE, None, "2026-03-14"),
        (HISTORY, [], [history_entry(the_answer)]),
    ]
    assert await ledger_rows(pool, ref, cid) == {SCORE: "9", DATE: "2026-03-14"}


async def test_only_the_mapped_fields_that_change_are_sent(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    before = contact(portal, cid)
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    await w.contacts.patch(route(answer(ref, cid, score=8)))
    sent: list[dict[str, str]] = []

    async def spy(request: httpx.Request) -> None:
        sent.append(commands_of(request))

    w2 = writers(
        pool, client_for(portal, transport=HookedTransport(portal, before=spy)), portal_config
    )
    event = await w2.contacts.patch(route(answer(ref, cid, score=8)))

    after = contact(portal, cid)
    untouched = {k: v for k, v in before.items() if k not in (*LASER_FIELDS, "DATE_MODIFY")}
    assert {k: after[k] for k in untouched} == untouched
    assert event is not None
    assert event.outcome == "unchanged"
    assert not any("crm.contact.update" in cmd for batch in sent for cmd in batch.values())


async def test_our_own_value_is_replaced_by_a_newer_answer(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    first = answer(ref, cid, score=3, item_id=901, submitted=NOW - days(40))
    second = answer(ref, cid, score=10, item_id=902)

    await w.contacts.patch(route(first))
    event = await w.contacts.patch(route(second))

    assert event is not None
    assert event.outcome == "patched"
    after = contact(portal, cid)
    assert (after[SCORE], after[DATE]) == ("10", "2026-03-14")
    assert after[HISTORY] == [history_entry(first), history_entry(second)]
    score_writes = [r for r in await audit_rows(pool, ref, cid) if r["field"] == SCORE]
    assert [(r["before"], r["after"], r["before_ours"]) for r in score_writes] == [
        (None, "3", False),
        ("3", "10", True),
    ]


async def test_a_legacy_value_is_left_alone_logged_and_listed(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, legacy_laser)[0]
    before = contact(portal, cid)
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    the_answer = answer(ref, cid, score=2)

    event = await w.contacts.patch(route(the_answer))

    assert event is not None
    assert event.outcome == "conflict"
    after = contact(portal, cid)
    assert (after[SCORE], after[DATE]) == (before[SCORE], before[DATE])
    assert after[HISTORY] == [*before[HISTORY], history_entry(the_answer)]
    assert [field for field, *_ in changes(portal, cid)] == [HISTORY]
    assert await conflict_rows(pool, ref, cid) == [(SCORE, "legacy"), (DATE, "legacy")]
    assert await ledger_rows(pool, ref, cid) == {SCORE: None, DATE: None}


async def test_a_hand_edited_value_of_ours_is_not_overwritten(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    await w.contacts.patch(route(answer(ref, cid, score=4, item_id=911, submitted=NOW - days(9))))
    portal.crm.update(CONTACT, cid, {SCORE: "4, but called: fixed"}, method="manual")

    event = await w.contacts.patch(route(answer(ref, cid, score=9, item_id=912)))

    assert event is not None
    assert event.outcome == "conflict"
    assert contact(portal, cid)[SCORE] == "4, but called: fixed"
    assert (SCORE, "hand_edited") in await conflict_rows(pool, ref, cid)


async def test_an_older_answer_never_replaces_a_newer_one(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    newer = answer(ref, cid, score=10, item_id=921)
    older = answer(ref, cid, score=2, item_id=920, submitted=NOW - days(20))

    first = await w.contacts.patch(route(newer))
    late = await w.contacts.patch(route(older))

    assert first is not None
    assert late is not None
    assert late.outcome == "skipped"
    assert late.details["stale"] is True
    after = contact(portal, cid)
    assert (after[SCORE], after[DATE], after[HISTORY]) == (
        "10",
        "2026-03-14",
        [history_entry(newer)],
    )
    assert all(row["after"] != "2" for row in await audit_rows(pool, ref, cid))


async def test_out_of_order_versions_of_one_answer_settle_on_the_latest(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cids = contacts_where(portal, blank_laser)[:5]
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    versions = {
        cid: [answer(ref, cid, score=s, updated=NOW + days(i)) for i, s in enumerate((2, 6, 9))]
        for cid in cids
    }
    shuffled = [route(v) for cid in cids for v in reversed(versions[cid])]

    await asyncio.gather(*(w.contacts.patch(action) for action in shuffled))

    for cid in cids:
        assert contact(portal, cid)[SCORE] == "9"
        assert history_entry(versions[cid][2]) in contact(portal, cid)[HISTORY]


@pytest.mark.parametrize(
    "arrival", [(10, 9), (9, 10)], ids=["later-item-first", "earlier-item-first"]
)
async def test_of_two_answers_submitted_in_the_same_second_the_later_item_wins(
    pool: asyncpg.Pool, portal_config: PortalConfig, arrival: tuple[int, int]
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    scores = {9: 3, 10: 8}  # item 10 was created after item 9, in the same second
    answers = {item: answer(ref, cid, score=scores[item], item_id=item) for item in arrival}

    events = [await w.contacts.patch(route(answers[item])) for item in arrival]

    assert contact(portal, cid)[SCORE] == "8"
    assert history_entry(answers[10]) in contact(portal, cid)[HISTORY]
    assert await ledger_rows(pool, ref, cid) == {SCORE: "8", DATE: "2026-03-14"}
    last = events[-1]
    assert last is not None
    assert last.details["stale"] is (arrival[-1] == 9)


async def test_the_ledger_keeps_the_later_item_of_a_tie_whatever_is_recorded_last(
    pool: asyncpg.Pool,
) -> None:
    ref = portal_ref()

    def row(item_id: int, sku: str) -> LedgerRow:
        version = Version(NOW, NOW, item_id, f"{ref.key}:{item_id}:{sku}")
        return LedgerRow(ref.key, 7, SCORE, str(item_id), version, f"{item_id}-{sku}")

    # One item's products compare by code point ("EQ-a" after "EQ-LASER-A"), as `Version` does,
    # whatever the database's collation.
    recorded = (row(10, "EQ-a"), row(9, "EQ-LASER-A"), row(10, "EQ-LASER-A"), row(2, "EQ-b"))
    async with pool.acquire() as conn:
        for ledger_row in recorded:
            await record(Outbox(), conn, Changes(ledger=[ledger_row]))
        kept = await conn.fetchrow(
            "SELECT answer_id, item_id FROM crm_field_ledger"
            " WHERE portal = $1 AND contact_id = 7 AND field = $2",
            ref.key,
            SCORE,
        )

    assert kept is not None
    assert (kept["answer_id"], kept["item_id"]) == (f"{ref.key}:10:EQ-a", 10)
    assert max(r.version for r in recorded) == Version(NOW, NOW, 10, f"{ref.key}:10:EQ-a")


async def test_the_ledger_keeps_the_later_state_of_an_answer_changed_within_a_second(
    pool: asyncpg.Pool,
) -> None:
    ref = portal_ref()
    answer_id = f"{ref.key}:10:EQ-LASER-A"

    def row(score: str, revision: int) -> LedgerRow:
        version = Version(NOW, NOW, 10, answer_id, revision)
        return LedgerRow(ref.key, 7, SCORE, score, version, f"{answer_id}-{revision}")

    async with pool.acquire() as conn:
        for ledger_row in (row("8", 2), row("3", 1)):
            await record(Outbox(), conn, Changes(ledger=[ledger_row]))
        loaded = await load_ledger(conn, [(ref.key, 7)], [SCORE])

    kept = loaded[(ref.key, 7, SCORE)]
    assert (kept.owned_value, kept.version) == ("8", Version(NOW, NOW, 10, answer_id, 2))


async def test_history_is_append_only_and_never_doubled(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, legacy_laser)[0]
    legacy_log = contact(portal, cid)[HISTORY]
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    the_answer = answer(ref, cid, score=6)
    action = route(the_answer)

    await w.contacts.patch(action)
    again = await w.contacts.patch(action)
    same_answer_new_action = await w.contacts.patch(route(the_answer))

    assert again is None
    assert same_answer_new_action is not None
    assert same_answer_new_action.details["kept"][HISTORY] == "already_logged"
    log = contact(portal, cid)[HISTORY]
    assert log == [*legacy_log, history_entry(the_answer)]
    for change in changes(portal, cid):
        assert len(change[2]) >= len(change[1] or [])


async def test_a_manual_edit_between_read_and_write_is_put_back(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    edited = False

    async def person_edits(request: httpx.Request) -> None:
        nonlocal edited
        writes = [c for c in commands_of(request).values() if "crm.contact.update" in c]
        if writes and not edited:
            edited = True
            portal.crm.update(
                CONTACT,
                cid,
                {SCORE: "7 (phoned, see notes)", HISTORY: ["2026-03-13 call: 7"]},
                method="manual",
            )

    transport = HookedTransport(portal, before=person_edits)
    w = writers(pool, client_for(portal, transport=transport), portal_config)
    the_answer = answer(ref, cid, score=10)

    event = await w.contacts.patch(route(the_answer))

    assert edited
    assert event is not None
    assert event.outcome == "conflict"
    after = contact(portal, cid)
    assert after[SCORE] == "7 (phoned, see notes)"
    assert after[DATE] == "2026-03-14"
    assert after[HISTORY] == ["2026-03-13 call: 7", history_entry(the_answer)]
    assert (SCORE, "edited_during_write") in await conflict_rows(pool, ref, cid)
    kinds = [(row["field"], row["kind"]) for row in await audit_rows(pool, ref, cid)]
    assert (SCORE, "restore") in kinds
    assert (HISTORY, "restore") in kinds
    assert (await ledger_rows(pool, ref, cid))[SCORE] is None


async def test_writes_whose_answer_was_lost_are_recognised_on_retry(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    lost = False

    async def lose_answer(request: httpx.Request) -> None:
        nonlocal lost
        if not lost and any("crm.contact.update" in c for c in commands_of(request).values()):
            lost = True
            raise httpx.ReadTimeout("the answer never came", request=request)

    flaky = client_for(portal, transport=HookedTransport(portal, after=lose_answer))
    the_answer = answer(ref, cid, score=5)
    action = route(the_answer)

    with pytest.raises(PortalUnavailable):
        await writers(pool, flaky, portal_config).contacts.patch(action)
    assert contact(portal, cid)[SCORE] == "5"

    event = await writers(pool, client_for(portal), portal_config).contacts.patch(action)

    assert event is not None
    assert event.outcome == "unchanged"
    assert contact(portal, cid)[HISTORY] == [history_entry(the_answer)]
    audit = await audit_rows(pool, ref, cid)
    assert {(row["field"], row["kind"]) for row in audit} == {
        (SCORE, "recovered"),
        (DATE, "recovered"),
        (HISTORY, "recovered"),
    }
    assert await ledger_rows(pool, ref, cid) == {SCORE: "5", DATE: "2026-03-14"}


async def test_many_contacts_share_few_requests(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=150)
    ref = portal_ref()
    w = writers(pool, client_for(portal), portal_config)
    cids = sorted(portal.crm.records(CONTACT))[:120]

    events = await asyncio.gather(*(w.contacts.patch(route(answer(ref, c))) for c in cids))

    assert all(event is not None for event in events)
    assert {e.outcome for e in events if e is not None} <= {"patched", "conflict"}
    report = portal.calls_report()
    batches = [call for call in report["calls"] if call["method"] == "batch"]
    assert len(batches) <= 6
    reads = [c for c in report["calls"] if c["method"] == "crm.contact.list"]
    assert len(reads) <= 6
    assert sum(1 for c in report["calls"] if c["method"] == "crm.contact.update") <= len(cids)


async def test_a_contact_missing_on_the_portal_is_skipped(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal(contacts=5)
    w = writers(pool, client_for(portal), portal_config)

    event = await w.contacts.patch(route(answer(portal_ref(), 99_999)))

    assert event is not None
    assert event.outcome == "skipped"
    assert "not found" in event.details["reason"]


async def test_undo_restores_the_value_before_our_write(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    client = client_for(portal)
    w = writers(pool, client, portal_config)
    await w.contacts.patch(route(answer(ref, cid, score=3, item_id=931, submitted=NOW - days(3))))
    await w.contacts.patch(route(answer(ref, cid, score=8, item_id=932)))
    writes = [r for r in await audit_rows(pool, ref, cid) if r["field"] == SCORE]

    refused = await undo_write(pool, client, writes[0]["id"], ref.key)
    result = await undo_write(pool, client, writes[1]["id"], ref.key)
    twice = await undo_write(pool, client, writes[1]["id"], ref.key)

    assert not refused.restored
    assert f"undo #{writes[1]['id']} first" in refused.message
    assert result.restored
    assert contact(portal, cid)[SCORE] == "3"
    assert (await ledger_rows(pool, ref, cid))[SCORE] == "3"
    undo_row = (await audit_rows(pool, ref, cid))[-1]
    assert (undo_row["kind"], undo_row["before"], undo_row["after"]) == ("undo", "8", "3")
    assert not twice.restored
    assert "already undone" in twice.message


async def test_undo_refuses_when_the_field_was_edited_since(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref = portal_ref()
    client = client_for(portal)
    w = writers(pool, client, portal_config)
    await w.contacts.patch(route(answer(ref, cid, score=8)))
    write = next(r for r in await audit_rows(pool, ref, cid) if r["field"] == SCORE)
    portal.crm.update(CONTACT, cid, {SCORE: "8, confirmed by phone"}, method="manual")

    result = await undo_write(pool, client, write["id"], ref.key)

    assert not result.restored
    assert "changed since" in result.message
    assert contact(portal, cid)[SCORE] == "8, confirmed by phone"
    assert [row["kind"] for row in await audit_rows(pool, ref, cid)].count("undo") == 0


async def test_undo_refuses_a_write_made_on_another_portal(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, blank_laser)[0]
    ref, served = portal_ref(), portal_ref()
    client = client_for(portal)
    await writers(pool, client, portal_config).contacts.patch(route(answer(ref, cid, score=8)))
    write = next(r for r in await audit_rows(pool, ref, cid) if r["field"] == SCORE)
    portal.reset()

    result = await undo_write(pool, client, write["id"], served.key)

    assert not result.restored
    assert result.message == (
        f"write #{write['id']} was made on portal {ref.key}, not on {served.key}, the portal"
        " this undo is on: nothing was restored"
    )
    assert portal.calls_report()["calls"] == []
    assert contact(portal, cid)[SCORE] == "8"


async def test_undo_of_a_history_append_restores_the_list_before(
    pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    portal = new_portal()
    cid = contacts_where(portal, legacy_laser)[0]
    legacy_log: list[Any] = contact(portal, cid)[HISTORY]
    ref = portal_ref()
    client = client_for(portal)
    await writers(pool, client, portal_config).contacts.patch(route(answer(ref, cid)))
    write = next(r for r in await audit_rows(pool, ref, cid) if r["field"] == HISTORY)

    result = await undo_write(pool, client, write["id"], ref.key)

    assert result.restored
    assert contact(portal, cid)[HISTORY] == legacy_log


async def test_the_next_groups_read_does_not_wait_for_a_group_to_record_its_writes(
    pool: asyncpg.Pool, portal_config: PortalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group gives its place in the pipeline up once the portal has answered its writes: the
    group after next reads in the request that carries the next group's writes, even while
    recording the first group's writes takes long."""
    portal = new_portal(contacts=10)
    ref = portal_ref()
    client = client_for(portal)
    # Groups of two and requests of four commands: a verify read, two updates and one read.
    coalescer = CommandCoalescer(client, window_s=0.2, max_commands=4)
    writer = ContactWriter(pool, Outbox(), coalescer, portal_config, group_size=2, window_s=0.05)
    cids = sorted(portal.crm.records(CONTACT))[:6]  # three groups
    recording = asyncio.Event()

    async def slow_record(outbox: Outbox, conn: Any, changes: Changes) -> None:
        if changes.audit:  # what happened on the portal: held back until the test says so
            await recording.wait()
        await record(outbox, conn, changes)

    monkeypatch.setattr(contacts_module, "record", slow_record)
    patches = asyncio.gather(*(writer.patch(route(answer(ref, c))) for c in cids))

    def batches() -> list[list[str]]:
        calls = portal.calls_report()["calls"]
        seqs = [call["seq"] for call in calls if call["method"] == "batch"]
        return [[c["method"] for c in calls if c["batch"] == seq] for seq in seqs]

    for _ in range(500):  # until the second group's writes have been sent
        if sum(b.count("crm.contact.update") for b in batches()) >= 4:
            break
        await asyncio.sleep(0.01)
    recording.set()
    events = await patches

    assert all(event is not None for event in events)
    writes = [b for b in batches() if "crm.contact.update" in b]
    assert len(writes) == 3
    # the second group's verify read and updates, and the third group's read
    assert sorted(writes[1]) == ["crm.contact.list"] * 2 + ["crm.contact.update"] * 2
