"""`nps dlq list|show|replay` on the real RabbitMQ: nothing is lost by looking, replay re-runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from aio_pika.abc import AbstractChannel
from typer.testing import CliRunner

from services.cli import app
from services.ops import dlq
from shared.events import PortalRef, WebhookReceived
from shared.messaging import PermanentError, make_broker, publish, subscribe
from shared.settings import get_settings
from shared.topology import INGEST_HYDRATE


def _event(item_id: int) -> WebhookReceived:
    return WebhookReceived(
        correlation_id=f"corr-{item_id}",
        portal=PortalRef(member_id="dlq-test"),
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
def cli_env(amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("RABBITMQ_URL", amqp_url)
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
