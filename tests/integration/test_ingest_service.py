"""The ingest process as `nps run ingest` starts it, and `nps sweep`: real ports, real RabbitMQ and
PostgreSQL, the sandbox portal served over HTTP in a thread and delivering its events itself."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
import yaml
from aio_pika.abc import AbstractChannel
from typer.testing import CliRunner

from services.cli import app as cli
from services.ingest.main import serve_ingest
from services.sandbox.app import create_app as sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import add_answer_items, seed_demo
from shared.health import QuietServer
from shared.settings import (
    SANDBOX_APP_TOKEN,
    SANDBOX_SECRET,
    SANDBOX_USER_ID,
    Settings,
    get_settings,
)
from tests.support import Captured, capture
from tests.support.paths import EXAMPLE_CONFIG

STARTUP_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def answers_of(captured: Captured, member_id: str) -> list[dict[str, Any]]:
    """Wait for this portal's answers (the relay also publishes what earlier tests left)."""
    count = 1
    while True:
        bodies = await captured.wait_for(count)
        mine = [b for b in bodies if b["portal"]["member_id"] == member_id]
        if mine:
            return mine
        count = len(bodies) + 1


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`serve()` and the CLI configure structlog for the whole process (JSON, bound context);
    put the defaults back so later tests log as they did before."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def portal() -> SandboxPortal:
    portal = SandboxPortal(
        user_id=SANDBOX_USER_ID,
        secret=SANDBOX_SECRET,
        application_token=SANDBOX_APP_TOKEN,
        member_id=uuid.uuid4().hex,
        limits=Limits.off(),
    )
    seed_demo(portal, config_path=EXAMPLE_CONFIG, contacts=3, seed=11)
    return portal


@pytest.fixture
def portal_yaml(tmp_path: Path, portal: SandboxPortal) -> Path:
    """The example portal YAML bound to this sandbox portal's member_id."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["portal"]["member_id"] = portal.member_id
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def sandbox_port(portal: SandboxPortal) -> Iterator[int]:
    """The sandbox portal on a real port, served from its own thread and event loop."""
    port = free_port()
    config = uvicorn.Config(sandbox_app(portal), host="127.0.0.1", port=port, log_level="warning")
    server = QuietServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started:
        assert time.monotonic() < deadline, "the sandbox portal did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(STARTUP_S)


async def test_run_ingest_serves_consumes_and_stops_on_request(
    settings: Settings,
    channel: AbstractChannel,
    portal: SandboxPortal,
    portal_yaml: Path,
    sandbox_port: int,
    restore_logging: None,
) -> None:
    ingest_port, health_port = free_port(), free_port()
    run_settings = settings.model_copy(
        update={
            "sandbox_port": sandbox_port,
            "ingest_port": ingest_port,
            "ingest_health_port": health_port,
            "nps_config": portal_yaml,
            "sweep_interval_s": 3600.0,
        }
    )
    portal.register_handler(f"http://127.0.0.1:{ingest_port}/webhooks/bitrix24")
    stop = asyncio.Event()
    async with capture(channel, "form.submitted") as captured:
        service = asyncio.create_task(serve_ingest(run_settings, stop))
        async with httpx.AsyncClient(timeout=10) as http:
            deadline = time.monotonic() + STARTUP_S
            while True:
                assert not service.done(), service.exception()
                assert time.monotonic() < deadline, "ingest did not become ready"
                try:
                    if (
                        await http.get(f"http://127.0.0.1:{health_port}/readyz")
                    ).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            webhook_port_metrics = await http.get(f"http://127.0.0.1:{ingest_port}/metrics")
            metrics = (await http.get(f"http://127.0.0.1:{health_port}/metrics")).text
            created = await http.post(
                f"http://127.0.0.1:{sandbox_port}/sandbox/answers",
                json={"items": [{"CATEGORY_ID": 12, "CONTACT_ID": 1, "UF_CRM_5_SCORE": 6}]},
            )
            [item_id] = created.json()["created"]
            mine = await answers_of(captured, portal.member_id)
        stop.set()
        await asyncio.wait_for(service, STARTUP_S)
    assert [(b["item_id"], b["answers"][0]["score"]) for b in mine] == [(item_id, 6)]
    assert [d.status for d in portal.deliveries] == ["delivered"]
    assert webhook_port_metrics.status_code == 404
    assert "nps_queue_consumers" in metrics


async def test_offline_intake_on_the_inbound_webhook_stops_ingest_naming_the_setting(
    settings: Settings,
    portal: SandboxPortal,
    portal_yaml: Path,
    sandbox_port: int,
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bitrix24 answers `event.offline.*` to an application only: with `INGEST_OFFLINE` and the
    webhook portal, ingest's offline job fails at its first pull and ingest stops, saying why."""
    run_settings = settings.model_copy(
        update={
            "sandbox_port": sandbox_port,
            "ingest_port": free_port(),
            "ingest_health_port": free_port(),
            "nps_config": portal_yaml,
            "sweep_interval_s": 3600.0,
            "ingest_offline": True,
        }
    )
    with pytest.raises(RuntimeError, match="background job\\(s\\) failed: ingest-offline"):
        await asyncio.wait_for(serve_ingest(run_settings, asyncio.Event()), STARTUP_S)
    logged = capsys.readouterr()
    failures = [
        json.loads(line)
        for line in (logged.out + logged.err).splitlines()
        if '"background_job_failed"' in line
    ]
    assert [f["job"] for f in failures] == ["ingest-offline"]
    assert (
        "INGEST_OFFLINE: the portal answers event.offline.* only to the application"
        in (failures[0]["error"])
    )
    assert f"/rest/{SANDBOX_USER_ID}/{SANDBOX_SECRET}/" not in logged.out + logged.err


def test_nps_sweep_command(
    monkeypatch: pytest.MonkeyPatch,
    pg_dsn: str,
    amqp_url: str,
    portal: SandboxPortal,
    portal_yaml: Path,
    sandbox_port: int,
    restore_logging: None,
) -> None:
    for name, value in {
        "DATABASE_URL": pg_dsn,
        "RABBITMQ_URL": amqp_url,
        "NPS_CONFIG": str(portal_yaml),
        "SANDBOX_PORT": str(sandbox_port),
        "SANDBOX_HOST": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("BITRIX24_APP_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(cli, ["sweep"])
        assert first.exit_code == 0, first.output
        assert "first sweep: watermark set" in first.output
        add_answer_items(
            portal, [{"CATEGORY_ID": 14, "CONTACT_ID": 2, "UF_CRM_5_CRYO_SCORE": 2003}]
        )
        second = runner.invoke(cli, ["sweep"])
        assert second.exit_code == 0, second.output
        assert "listed 1 item(s), submitted 1" in second.output
        assert "published" in second.output
        bad = runner.invoke(cli, ["sweep", "--since", "last tuesday"])
        assert bad.exit_code == 2
        assert "not an ISO 8601 time" in bad.output
    finally:
        get_settings.cache_clear()
