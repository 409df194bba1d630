"""`nps dlq list|show|replay|discard` on the real RabbitMQ: nothing is lost by looking, replay
re-runs, discard drops for good with a record (who, when, why) in PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from typer.testing import CliRunner

from services.cli import app
from services.ops import dlq
from shared.events import PortalRef, WebhookReceived
from shared.messaging import PermanentError, make_broker, publish, subscribe
from shared.settings import get_settings
from shared.topology import INGEST_HYDRATE
from tests.support.paths import ROOT


def _event(item_id: int, portal: PortalRef | None = None) -> WebhookReceived:
    return WebhookReceived(
        correlation_id=f"corr-{item_id}",
        portal=portal or PortalRef(member_id="dlq-test"),
        source="event",
        event="ONCRMDYNAMICITEMADD",
        entity_type_id=1038,
        item_id=item_id,
    )


async def _wait_for_dead_letters(channel: AbstractChannel, count: int) -> None:
    """Until the DLQ holds exactly `count` (its count is eventually consistent)."""
    seen = -1
    for _ in range(100):
        seen = (await dlq.counts(channel, ["ingest.hydrate"]))["ingest.hydrate"]
        if seen == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} dead letters, the DLQ holds {seen}")


async def test_list_show_and_replay(amqp_url: str, channel: AbstractChannel) -> None:
    fixed = asyncio.Event()
    handled: list[int] = []

    async def handler(event: WebhookReceived) -> None:
        if not fixed.is_set():
            raise PermanentError(f"item {event.item_id} cannot be read")
        handled.append(event.item_id)

    broker = make_broker(amqp_url)
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler)
    await broker.start()
    try:
        first, second = _event(101), _event(102)
        await publish(broker, first)
        await publish(broker, second)
        await _wait_for_dead_letters(channel, 2)

        letters = await dlq.list_dead_letters(channel, ["ingest.hydrate"])
        assert {letter.message_id for letter in letters} == {
            str(first.event_id),
            str(second.event_id),
        }
        assert all("cannot be read" in letter.reason for letter in letters)
        assert all(letter.routing_key == "webhook.received" for letter in letters)
        # Looking loses nothing (the queue's count catches up with the requeue).
        await _wait_for_dead_letters(channel, 2)
        assert len(await dlq.list_dead_letters(channel, ["ingest.hydrate"])) == 2

        fixed.set()
        replayed = await dlq.replay(channel, {str(first.event_id)}, ["ingest.hydrate"])
        assert [letter.message_id for letter in replayed] == [str(first.event_id)]
        for _ in range(100):
            if handled:
                break
            await asyncio.sleep(0.1)
        assert handled == [101]
        await _wait_for_dead_letters(channel, 1)
    finally:
        await broker.stop()


@pytest.fixture
def cli_env(amqp_url: str, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("RABBITMQ_URL", amqp_url)
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


async def test_cli_lists_and_refuses_an_unscoped_replay(
    cli_env: CliRunner, channel: AbstractChannel, amqp_url: str
) -> None:
    async def handler(event: WebhookReceived) -> None:
        raise PermanentError(f"score field of item {event.item_id} holds 'abc'")

    broker = make_broker(amqp_url)
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler)
    await broker.start()
    try:
        event = _event(201)
        await publish(broker, event)
        await _wait_for_dead_letters(channel, 1)
    finally:
        await broker.stop()

    result = await asyncio.to_thread(cli_env.invoke, app, ["dlq", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["message_id"] for row in rows] == [str(event.event_id)]
    assert "holds 'abc'" in rows[0]["reason"]

    shown = await asyncio.to_thread(cli_env.invoke, app, ["dlq", "show", str(event.event_id)])
    assert shown.exit_code == 0
    assert json.loads(shown.output)["body"]["item_id"] == 201

    refused = await asyncio.to_thread(cli_env.invoke, app, ["dlq", "replay"])
    assert refused.exit_code != 0
    assert "--all" in refused.output


async def _dead_letter(
    amqp_url: str, channel: AbstractChannel, *item_ids: int, portal: PortalRef | None = None
) -> list[str]:
    async def handler(event: WebhookReceived) -> None:
        raise PermanentError(f"item {event.item_id} is not a survey answer")

    before = (await dlq.counts(channel, ["ingest.hydrate"]))["ingest.hydrate"]
    broker = make_broker(amqp_url)
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler)
    await broker.start()
    try:
        events = [_event(item_id, portal) for item_id in item_ids]
        for event in events:
            await publish(broker, event)
        await _wait_for_dead_letters(channel, before + len(events))
    finally:
        await broker.stop()
    return [str(event.event_id) for event in events]


async def test_discard_drops_dead_letters_for_good_with_who_when_and_why(
    cli_env: CliRunner, channel: AbstractChannel, amqp_url: str, pool: asyncpg.Pool
) -> None:
    await pool.execute("DELETE FROM ops_dlq_discards")
    kept, dropped = await _dead_letter(amqp_url, channel, 301, 302)

    result = await asyncio.to_thread(
        cli_env.invoke,
        app,
        ["dlq", "discard", dropped, "--reason", "test item, not a survey", "--by", "alice"],
    )
    assert result.exit_code == 0, result.output
    assert f"discarded {dropped} from ingest.hydrate" in result.output
    await _wait_for_dead_letters(channel, 1)
    [left] = await dlq.list_dead_letters(channel, ["ingest.hydrate"])
    assert left.message_id == kept
    [row] = await pool.fetch("SELECT * FROM ops_dlq_discards")
    assert (row["queue"], row["message_id"], row["discarded_by"]) == (
        "ingest.hydrate",
        dropped,
        "alice",
    )
    assert row["reason"] == "test item, not a survey"
    assert "not a survey answer" in row["failure"]
    assert json.loads(row["body"])["item_id"] == 302
    assert row["portal"] == "dlq-test"

    everything = await asyncio.to_thread(
        cli_env.invoke, app, ["dlq", "discard", "--all", "--reason", "cleared after the fix"]
    )
    assert everything.exit_code == 0, everything.output
    await _wait_for_dead_letters(channel, 0)

    listed = await asyncio.to_thread(cli_env.invoke, app, ["dlq", "list", "--discarded", "--json"])
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.output)
    assert [(r["message_id"], r["discarded_by"], r["reason"]) for r in records] == [
        (kept, getpass.getuser(), "cleared after the fix"),
        (dropped, "alice", "test item, not a survey"),
    ]
    assert {r["portal"] for r in records} == {"dlq-test"}
    table = await asyncio.to_thread(cli_env.invoke, app, ["dlq", "list", "--discarded"])
    assert "alice" in table.output
    assert "2 discarded dead letter(s)" in table.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dlq", "discard", "--reason", "x"], "--all"),
        (["dlq", "discard", "--all"], "--reason is required"),
        (["dlq", "discard", "--all", "--reason", "  "], "--reason is required"),
        (["dlq", "discard", "--all", "--reason", "x", "--by", ""], "--by must name"),
    ],
)
async def test_discard_refuses_without_a_target_a_reason_or_a_name(
    cli_env: CliRunner,
    channel: AbstractChannel,
    amqp_url: str,
    pool: asyncpg.Pool,
    args: list[str],
    expected: str,
) -> None:
    await _dead_letter(amqp_url, channel, 401)
    try:
        result = await asyncio.to_thread(cli_env.invoke, app, args)
        assert result.exit_code == 2
        assert expected in result.output
        await _wait_for_dead_letters(channel, 1)
    finally:
        async with pool.acquire() as conn:
            await dlq.discard(channel, conn, reason="test clean-up", by="test")


BODIES: list[Any] = [
    {"portal": {"member_id": "m-alpha", "domain": "a.bitrix24.ru"}},
    {"portal": {"member_id": None, "domain": "a.bitrix24.ru"}},
    {"portal": {"member_id": "", "domain": "a.bitrix24.ru"}},
    {"portal": {"member_id": "", "domain": ""}},
    {"portal": {}},
    {"portal": {"member_id": 7}},
    {"portal": {"member_id": 7}, "answer": {"portal": {"member_id": "m-beta"}}},
    {"portal": {"domain": ["x"]}},
    {"portal": "m-alpha", "answer": {"portal": {"domain": "b.bitrix24.ru"}}},
    {"answer": {"portal": {"member_id": "m-beta"}}, "action": "service"},
    {"answer": {"portal": {"member_id": True}}},
    {"action_id": "x", "outcome": "created"},
    ["not", "an", "object"],
    "not json at all",
]
"""Messages as a discard keeps them, the odd ones included."""


async def test_the_backfill_of_older_discards_keys_them_as_a_discard_does(
    pool: asyncpg.Pool,
) -> None:
    """Rows discarded before `portal` existed got it from SQL (migration 0910, correcting 0905),
    every discard since from `dlq.portal_of`: the same key for the same message."""
    backfill = (ROOT / "migrations" / "0910_ops_discards_portal_key.sql").read_text()
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("DELETE FROM ops_dlq_discards")
            await conn.executemany(
                """INSERT INTO ops_dlq_discards (queue, message_id, routing_key, failure,
                       attempts, body, reason, discarded_by)
                   VALUES ('q', $1, 'k', 'f', 1, $2::jsonb, 'r', 'alice')""",
                [(str(n), json.dumps(body)) for n, body in enumerate(BODIES)],
            )
            await conn.execute(backfill)
            rows = await conn.fetch("SELECT message_id, portal FROM ops_dlq_discards")
        finally:
            await transaction.rollback()
    backfilled = {int(r["message_id"]): r["portal"] for r in rows}
    assert backfilled == {n: dlq.portal_of(body) for n, body in enumerate(BODIES)}


async def test_portal_scopes_list_replay_and_discard_to_one_portals_messages(
    cli_env: CliRunner, channel: AbstractChannel, amqp_url: str, pool: asyncpg.Pool
) -> None:
    """Many portals served: `--portal` (a member id; in application mode also an installed
    portal's domain, resolved as every command resolves it) lists, replays and discards one
    portal's dead letters and leaves the others' where they are; a domain a message merely
    names matches nothing."""
    alpha = PortalRef(member_id="dlq-alpha", domain="alpha.bitrix24.ru")
    beta = PortalRef(member_id="dlq-beta", domain="beta.bitrix24.ru")
    alphas = await _dead_letter(amqp_url, channel, 401, 402, portal=alpha)
    betas = await _dead_letter(amqp_url, channel, 403, portal=beta)

    async def listed(*args: str) -> list[dict[str, str]]:
        result = await asyncio.to_thread(cli_env.invoke, app, ["dlq", "list", "--json", *args])
        assert result.exit_code == 0, result.output
        rows: list[dict[str, str]] = json.loads(result.output)
        return rows

    rows = await listed("--portal", "dlq-alpha")
    assert sorted(row["message_id"] for row in rows) == sorted(alphas)
    assert {row["portal"] for row in rows} == {"dlq-alpha"}
    assert [row["message_id"] for row in await listed("--portal", "dlq-beta")] == betas
    assert await listed("--portal", "nobody") == []
    assert await listed("--portal", "alpha.bitrix24.ru") == []

    replayed = await asyncio.to_thread(
        cli_env.invoke, app, ["dlq", "replay", "--all", "--portal", "dlq-alpha"]
    )
    assert replayed.exit_code == 0, replayed.output
    assert "2 message(s) replayed" in replayed.output, replayed.output
    await _wait_for_dead_letters(channel, 1)
    assert [row["message_id"] for row in await listed()] == betas

    missed = await asyncio.to_thread(
        cli_env.invoke, app, ["dlq", "replay", betas[0], "--portal", "dlq-alpha"]
    )
    assert missed.exit_code == 1
    assert "among portal dlq-alpha's messages" in missed.output
    dropped = await asyncio.to_thread(
        cli_env.invoke,
        app,
        ["dlq", "discard", "--all", "--portal", "dlq-beta", "--reason", "beta's test data"],
    )
    assert dropped.exit_code == 0, dropped.output
    assert await listed() == []
    record = await pool.fetchrow(
        "SELECT portal, reason FROM ops_dlq_discards WHERE message_id = $1", betas[0]
    )
    assert record is not None
    assert (record["portal"], record["reason"]) == ("dlq-beta", "beta's test data")
