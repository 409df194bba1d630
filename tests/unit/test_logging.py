"""Log set-up: no secret reaches a line; standard-library loggers stay quiet below warnings and
are JSON lines like ours."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.logging import configure_logging, get_logger, redact

ROOT = Path(__file__).resolve().parents[2]


def test_webhook_secrets_and_secret_keys_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", fmt="json")
    get_logger("test").info(
        "portal_call",
        url="https://example.bitrix24.ru/rest/1/k9x7secretcode/crm.item.list",
        app_token="tok-123",
        item_id=7,
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["url"] == "https://example.bitrix24.ru/rest/1/***/crm.item.list"
    assert line["app_token"] == "***"
    assert line["item_id"] == 7
    assert redact("no secret here") == "no secret here"


def test_configuring_again_applies_to_a_logger_already_used(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = get_logger("test.reconfigured")
    configure_logging("warning", "json")
    log.info("hidden_at_warning")
    configure_logging("info", "json")
    log.info("shown_at_info")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["shown_at_info"]


def test_a_library_that_sets_its_logger_to_debug_stays_quiet_below_warnings() -> None:
    """fast_bitrix24 sets its own logger to DEBUG when imported; only its warnings may show."""
    script = """
import logging
from shared.logging import configure_logging
configure_logging("info", fmt="json")
noisy = logging.getLogger("noisy.library")
noisy.setLevel(logging.DEBUG)
noisy.debug("hidden debug")
noisy.info("hidden info")
noisy.warning("shown warning")
"""
    lines = [json.loads(line) for line in _stderr_of(script)]
    assert [(line["logger"], line["level"], line["event"]) for line in lines] == [
        ("noisy.library", "warning", "shown warning")
    ]


def _stderr_of(script: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()


def test_library_lines_are_json_with_context_and_without_secrets() -> None:
    lines = _stderr_of("""
import logging
from shared.logging import bind_message_context, configure_logging
configure_logging("info", fmt="json", service="crm_sync")
bind_message_context(correlation_id="item-7")
logging.getLogger("aio_pika.robust_connection").warning(
    "reconnecting to %s", "https://example.bitrix24.ru/rest/1/k9x7secretcode/"
)
try:
    raise ConnectionError("broker gone")
except ConnectionError:
    logging.getLogger("faststream.access.rabbit").exception("consumer failed")
""")
    warning, error = (json.loads(line) for line in lines)
    assert warning["logger"] == "aio_pika.robust_connection"
    assert warning["level"] == "warning"
    assert warning["event"] == "reconnecting to https://example.bitrix24.ru/rest/1/***/"
    assert warning["service"] == "crm_sync"
    assert warning["correlation_id"] == "item-7"
    assert "timestamp" in warning
    assert error["level"] == "error"
    assert "ConnectionError: broker gone" in error["exception"]


def test_the_http_server_logs_json_lines() -> None:
    """uvicorn's own logger, as a service's HTTP endpoint (`serve_http`) runs it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lines = _stderr_of(f"""
import asyncio
from shared.health import serve_http
from shared.logging import configure_logging

async def app(scope, receive, send):
    pass

async def main():
    configure_logging("info", fmt="json", service="ingest")
    stop = asyncio.Event()
    server = asyncio.create_task(serve_http(app, "127.0.0.1", {port}, stop))
    for _ in range(200):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", {port})
            break
        except OSError:
            await asyncio.sleep(0.05)
    writer.write(b"NOT HTTP AT ALL\\r\\n\\r\\n")
    await writer.drain()
    await reader.read()
    writer.close()
    stop.set()
    await server

asyncio.run(main())
""")
    assert lines, "uvicorn logged nothing about the malformed request"
    parsed = [json.loads(line) for line in lines]
    assert any(line["logger"].startswith("uvicorn") for line in parsed), parsed
    assert all(line["service"] == "ingest" for line in parsed)
