"""The worked integrator example, `examples/telegram_alert.py`, against the real RabbitMQ.

A local HTTP server stands in for the Telegram Bot API (TELEGRAM_API_URL points the example at
it), the way an integrator tests a consumer of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from examples.telegram_alert import consumer
from services.harness.scratch import scratch_database, scratch_name
from shared.events import NpsScored
from shared.messaging import REASON_HEADER
from shared.service import serve
from shared.settings import Settings
from shared.topology import EXCHANGE, declare_queue
from tests.support.router import scored

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "4242:AAE-not-a-real-token"  # the fake Bot API's token


class FakeTelegram:
    """Records every sendMessage call; a chat id of "missing" gets Telegram's 400."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls.append((self.path, body))
                missing = body["chat_id"] == "missing"
                reply = (
                    {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
                    if missing
                    else {"ok": True, "result": {"message_id": len(calls)}}
                )
                payload = json.dumps(reply).encode()
                self.send_response(400 if missing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        for _ in range(int(timeout * 10)):
            if len(self.mine()) >= count:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"expected {count} Telegram calls, got {self.calls}")

    def mine(self) -> list[tuple[str, dict[str, Any]]]:
        """Calls about this module's own answers (contact 42): the consumer's outbox relay may
        also publish events other tests of the session left behind."""
        return [call for call in self.calls if "(contact 42)" in call[1]["text"]]


@pytest.fixture
def telegram(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    fake = FakeTelegram()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TELEGRAM_API_URL", fake.url)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "-100200300")
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
async def alert_queue(channel: AbstractChannel) -> str:
    """The example's queue, declared as the example declares it, empty at the start."""
    await declare_queue(channel, consumer.queue)
    for name in (consumer.queue.name, consumer.queue.dlq):
        await (await channel.get_queue(name)).purge()
    return consumer.queue.name


async def send(channel: AbstractChannel, event: NpsScored) -> None:
    exchange = await channel.get_exchange(EXCHANGE)
    await exchange.publish(
        aio_pika.Message(event.model_dump_json().encode(), message_id=str(event.event_id)),
        routing_key=event.routing_key(),
    )


def test_the_example_is_a_short_module() -> None:
    lines = (ROOT / "examples" / "telegram_alert.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 30


async def test_nps_run_receives_only_what_it_bound_to(
    settings: Settings, channel: AbstractChannel, alert_queue: str, telegram: FakeTelegram
) -> None:
    detractor = scored("detractor", 2, item_id=9001, comment="Broken after a week")
    for event in (
        scored("passive", 7, item_id=9002),
        scored("promoter", 10, item_id=9003),
        scored("detractor", 1, kind="cosmetics", item_id=9004),
        detractor,
    ):
        await send(channel, event)

    # A database of its own: the process's outbox relay must not publish other tests' leftovers.
    server = settings.database_url.get_secret_value()
    async with scratch_database(server, scratch_name("tg")) as fresh:
        env = os.environ | {
            "RABBITMQ_URL": settings.rabbitmq_url.get_secret_value(),
            "DATABASE_URL": fresh,
            "NPS_CONFIG": str(settings.nps_config),
            "LOG_FORMAT": "json",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "examples.telegram_alert"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            await telegram.wait_for(1)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert telegram.mine() == [
        (
            f"/bot{TOKEN}/sendMessage",
            {
                "chat_id": "-100200300",
                "text": "NPS 2 for Laser A (contact 42): Broken after a week",
            },
        )
    ]
    # Whatever the process had not handled went back to the queue when it stopped: nothing did.
    assert await (await channel.get_queue(alert_queue)).get(fail=False) is None


async def test_a_refused_alert_is_dead_lettered_without_the_token(
    settings: Settings,
    channel: AbstractChannel,
    alert_queue: str,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "missing")
    await send(channel, scored("detractor", 0, item_id=9101))
    stop = asyncio.Event()
    service = asyncio.create_task(serve(consumer.name, settings, consumer.wire, stop=stop))
    dlq = await channel.get_queue(consumer.queue.dlq)
    try:
        for _ in range(200):
            dead = await dlq.get(fail=False)
            if dead is not None:
                await dead.ack()
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"nothing reached {consumer.queue.dlq}")
    finally:
        stop.set()
        await service
    reason = dead.headers[REASON_HEADER]
    assert isinstance(reason, str)
    assert reason.startswith("Telegram refused the alert:")
    assert "chat not found" in reason
    assert TOKEN not in reason
    assert len(telegram.mine()) == 1
