"""Answers of a form (a category of the NPS smart process) that the portal YAML does not map yet:
held, listed, and scored and routed once when the YAML learns the category, on a reload (SIGHUP)
or after a restart. Ingest, scoring and router run as `nps run` starts them, against real
PostgreSQL and RabbitMQ, with the sandbox portal served over HTTP and delivering its events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
import uvicorn
import yaml
from aio_pika.abc import AbstractChannel
from typer.testing import CliRunner

from services.cli import app as cli
from services.harness.scratch import scratch_database, scratch_name
from services.ingest.hydrator import FieldCatalog, Hydrator, ItemReader
from services.ingest.main import serve_ingest
from services.ingest.release import HELD_EVENT, ConfigReloader, InstalledReleases, release_held
from services.ingest.sweep import Sweeper
from services.reports.app import create_app as reports_app
from services.router.main import wire as router_wire
from services.sandbox.app import create_app as sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import add_answer_items, seed_demo
from services.scoring.main import wire as scoring_wire
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.db import create_pool
from shared.events import PortalRef, WebhookReceived
from shared.health import QuietServer
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from shared.portals import PortalConfigs
from shared.service import serve
from shared.settings import (
    SANDBOX_APP_TOKEN,
    SANDBOX_SECRET,
    SANDBOX_USER_ID,
    Settings,
    get_settings,
)
from tests.support import Captured, capture
from tests.support.dashboard import figures
from tests.support.paths import EXAMPLE_CONFIG

STARTUP_S = 30.0
NPS = 1038
LASER_C = {
    "name": "Laser C",
    "kind": "equipment",
    "product": {"sku": "EQ-LASER-C", "name": "Laser C"},
    "score_field": "UF_CRM_5_SCORE",
}
SCORES = (2, 7, 9)
"""A detractor (service lead and task), a passive (nothing) and a promoter (marketing lead)."""
ROUTED = {"service", "task", "marketing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def restore_logging() -> Iterator[None]:
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
    seed_demo(portal, config_path=EXAMPLE_CONFIG, contacts=3, seed=5)
    return portal


@pytest.fixture
def sandbox_port(portal: SandboxPortal) -> Iterator[int]:
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


def example(member_id: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["portal"]["member_id"] = member_id
    return data


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


@contextlib.asynccontextmanager
async def running(
    start: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    ready: Callable[[], Awaitable[bool]],
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(start(stop))
    deadline = time.monotonic() + STARTUP_S
    while not await ready():
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, "the service did not become ready"
        await asyncio.sleep(0.1)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, STARTUP_S)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


class Pipeline:
    """What the test reads back: held items, scored answers and routed actions of its items."""

    def __init__(self, pool: asyncpg.Pool, member_id: str) -> None:
        self.pool = pool
        self.member_id = member_id

    async def held(self) -> int:
        return int(
            await self.pool.fetchval(
                """SELECT count(*) FROM ingest_unmapped_items
                   WHERE portal = $1 AND released_at IS NULL""",
                self.member_id,
            )
        )

    async def scored(self) -> list[tuple[int, int, int]]:
        rows = await self.pool.fetch(
            """SELECT item_id, score, revision FROM scoring_answers
               WHERE portal = $1 ORDER BY item_id""",
            self.member_id,
        )
        return [(r["item_id"], r["score"], r["revision"]) for r in rows]

    async def routed(self) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            """SELECT a.answer_id, a.action FROM router_actions a
               JOIN scoring_answers s USING (answer_id)
               WHERE s.portal = $1 ORDER BY a.answer_id, a.action""",
            self.member_id,
        )
        return [(r["answer_id"], r["action"]) for r in rows]


def forms_of(captured: Captured, member_id: str) -> list[dict[str, Any]]:
    return [b for b in captured.bodies if b["portal"]["member_id"] == member_id]


async def test_answers_of_a_new_form_are_held_then_scored_and_routed_once(
    settings: Settings,
    pool: asyncpg.Pool,
    channel: AbstractChannel,
    portal: SandboxPortal,
    sandbox_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
) -> None:
    portal_yaml = tmp_path / "portal.yaml"
    data = example(portal.member_id)
    write_yaml(portal_yaml, data)
    ingest_port, health_port = free_port(), free_port()
    run_settings = settings.model_copy(
        update={
            "sandbox_port": sandbox_port,
            "ingest_port": ingest_port,
            "ingest_health_port": health_port,
            "nps_config": portal_yaml,
            "sweep_interval_s": 3600.0,
            "config_reload_s": 3600.0,  # only SIGHUP reloads here
        }
    )
    portal.register_handler(f"http://127.0.0.1:{ingest_port}/webhooks/bitrix24")
    base = f"http://127.0.0.1:{sandbox_port}"
    rest = f"{base}/rest/{SANDBOX_USER_ID}/{SANDBOX_SECRET}"
    seen = Pipeline(pool, portal.member_id)

    async with httpx.AsyncClient(timeout=10) as http:

        async def ingest_ready() -> bool:
            try:
                response = await http.get(f"http://127.0.0.1:{health_port}/readyz")
            except httpx.TransportError:
                return False
            return response.status_code == 200

        async def started() -> bool:
            return True

        def ingest(stop: asyncio.Event) -> Coroutine[Any, Any, None]:
            return serve_ingest(run_settings, stop)

        def scoring(stop: asyncio.Event) -> Coroutine[Any, Any, None]:
            return serve("scoring", run_settings, scoring_wire, stop=stop)

        def router(stop: asyncio.Event) -> Coroutine[Any, Any, None]:
            return serve("router", run_settings, router_wire, stop=stop)

        # The marketer adds a form on the portal; the YAML does not know it yet.
        added = await http.post(
            f"{rest}/crm.category.add", json={"entityTypeId": NPS, "fields": {"name": "Laser C"}}
        )
        category_id = added.json()["result"]["category"]["id"]

        async with (
            capture(channel, "form.submitted") as captured,
            running(scoring, started),
            running(router, started),
        ):
            async with running(ingest, ingest_ready):
                created = await http.post(
                    f"{base}/sandbox/answers",
                    json={
                        "items": [
                            {"CATEGORY_ID": category_id, "CONTACT_ID": 1, "UF_CRM_5_SCORE": s}
                            for s in SCORES
                        ]
                    },
                )
                items = created.json()["created"]

                async def all_held() -> bool:
                    return await seen.held() == len(SCORES)

                await until(all_held, "the answers to be held")
                monkeypatch.setenv("DATABASE_URL", run_settings.database_url.get_secret_value())
                get_settings.cache_clear()
                try:
                    listing = await asyncio.to_thread(
                        CliRunner().invoke,
                        cli,
                        ["unmapped", "--json", "--portal", portal.member_id],
                    )
                finally:
                    get_settings.cache_clear()
                assert listing.exit_code == 0, listing.output
                listed = json.loads(listing.output)
                assert [(c["category_id"], c["items"]) for c in listed] == [(category_id, 3)]
                assert forms_of(captured, portal.member_id) == []
                assert await seen.scored() == []

                # The YAML learns the form; SIGHUP reloads it without a restart.
                data["survey"]["segments"].append({"category_id": category_id, **LASER_C})
                write_yaml(portal_yaml, data)
                os.kill(os.getpid(), signal.SIGHUP)

                async def all_routed() -> bool:
                    actions = {action for _, action in await seen.routed()}
                    return len(await seen.scored()) == len(SCORES) and actions == ROUTED

                await until(all_routed, "the held answers to be scored and routed")
                assert await seen.held() == 0
                scored = await seen.scored()
                routed = await seen.routed()
                assert [(item, score) for item, score, _ in scored] == list(
                    zip(items, SCORES, strict=True)
                )
                assert sorted(action for _, action in routed) == ["marketing", "service", "task"]

                # A second reload submits nothing again.
                os.kill(os.getpid(), signal.SIGHUP)
                await asyncio.sleep(2.0)
                assert await seen.scored() == scored
                assert await seen.routed() == routed

            # Nor does a restart.
            async with running(ingest, ingest_ready):
                await asyncio.sleep(2.0)
            forms = forms_of(captured, portal.member_id)
            assert sorted(f["item_id"] for f in forms) == items
            assert {f["segment"] for f in forms} == {"Laser C"}
            assert await seen.scored() == scored
            assert await seen.routed() == routed


# --- the hydrator, the release and the reloader on their own ---------------------------------


@pytest.fixture
async def b24(portal: SandboxPortal) -> AsyncIterator[Bitrix24Client]:
    transport = httpx.ASGITransport(app=sandbox_app(portal))
    base_url = f"http://sandbox/rest/{portal.user_id}/{portal.secret}/"
    async with Bitrix24Client(base_url, MemoryRateBudget(None), transport=transport) as client:
        yield client


@pytest.fixture
def new_form(portal: SandboxPortal) -> int:
    """A category added on the portal that the example YAML does not map."""
    etype = portal.crm.entity_type(NPS)
    assert etype is not None
    return portal.crm.add_category(etype, "Laser C").id


def configs(member_id: str, category_id: int) -> tuple[PortalConfig, PortalConfig]:
    """The example YAML for this portal, without and with a segment for `category_id`."""
    data = example(member_id)
    before = parse_portal_config(data)
    data["survey"]["segments"].append({"category_id": category_id, **LASER_C})
    return before, parse_portal_config(data)


def robot(member_id: str, item_id: int, category_id: int, score: int, updated: str) -> Any:
    fields = {
        "id": item_id,
        "categoryId": category_id,
        "contactId": 1,
        "UF_CRM_5_SCORE": score,
        "createdTime": "2024-07-22T18:00:00Z",
        "updatedTime": updated,
    }
    return WebhookReceived(
        correlation_id=f"corr-{item_id}",
        portal=PortalRef(member_id=member_id),
        source="robot",
        event="ROBOT",
        entity_type_id=NPS,
        item_id=item_id,
        fields=fields,
    )


async def outbox(pool: asyncpg.Pool, member_id: str, routing_key: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT body FROM outbox WHERE routing_key = $1
           AND body->'portal'->>'member_id' = $2 ORDER BY id""",
        routing_key,
        member_id,
    )
    return [json.loads(row["body"]) for row in rows]


async def submissions(pool: asyncpg.Pool, member_id: str) -> list[WebhookReceived]:
    bodies = await outbox(pool, member_id, "webhook.received")
    return [WebhookReceived.model_validate(b) for b in bodies if b["event"] == HELD_EVENT]


async def scores(pool: asyncpg.Pool, member_id: str) -> list[tuple[int, int]]:
    forms = await outbox(pool, member_id, "form.submitted")
    return [(f["item_id"], f["answers"][0]["score"]) for f in forms]


async def test_a_held_item_keeps_its_newest_state_and_goes_out_once(
    pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, new_form: int
) -> None:
    member = portal.member_id
    before, after = configs(member, new_form)
    hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before)
    await hydrator.handle(robot(member, 501, new_form, 3, "2024-07-22T18:00:00Z"))
    await hydrator.handle(robot(member, 501, new_form, 8, "2024-07-22T19:00:00Z"))
    await hydrator.handle(robot(member, 501, new_form, 3, "2024-07-22T18:00:00Z"))
    assert await scores(pool, member) == []
    assert await release_held(pool, Outbox(), before) == 0

    assert await release_held(pool, Outbox(), after) == 1
    assert await release_held(pool, Outbox(), after) == 0
    [held] = await submissions(pool, member)
    assert held.fields is not None
    assert (held.source, held.item_id, held.fields["UF_CRM_5_SCORE"]) == ("sweep", 501, 8)
    hydrator.reconfigure(after)
    await hydrator.handle(held)
    await hydrator.handle(held)
    assert await scores(pool, member) == [(501, 8)]

    # The same state held again (a message a process with the old YAML still had) is
    # submitted under the same key: nothing new goes out.
    hydrator.reconfigure(before)
    await hydrator.handle(robot(member, 501, new_form, 8, "2024-07-22T19:00:00Z"))
    assert await release_held(pool, Outbox(), after) == 0
    assert len(await submissions(pool, member)) == 1


async def test_each_installed_portals_held_items_go_out_with_its_own_configuration(
    pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, new_form: int
) -> None:
    """Application mode: two portals hold an item of the same unmapped category; alpha's
    configuration learns it and releases alpha's item only (at the next round, once), beta's
    stays held until beta's own configuration maps the category."""
    alpha, beta = portal.member_id, f"beta-{uuid.uuid4().hex[:8]}"
    alpha_before, alpha_after = configs(alpha, new_form)
    beta_before, beta_after = configs(beta, new_form)
    for member, config, item in ((alpha, alpha_before, 601), (beta, beta_before, 602)):
        hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), config)
        await hydrator.handle(robot(member, item, new_form, 4, "2024-07-22T18:00:00Z"))
    configs_of = PortalConfigs({alpha: alpha_before, beta: beta_before})
    releases = InstalledReleases(pool, Outbox(), configs_of, lambda: (alpha, beta))
    assert await releases.release() == 0  # at start: nothing either maps

    configs_of.put(alpha, alpha_after)
    assert await releases.release() == 1
    assert await releases.release() == 0  # each held item goes out once
    assert [s.item_id for s in await submissions(pool, alpha)] == [601]
    assert await submissions(pool, beta) == []

    configs_of.put(beta, beta_after)
    assert await releases.release() == 1
    assert [s.item_id for s in await submissions(pool, beta)] == [602]


async def test_the_reloader_applies_a_changed_file_and_keeps_a_broken_one(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    new_form: int,
    tmp_path: Path,
) -> None:
    member = portal.member_id
    before, after = configs(member, new_form)
    path = tmp_path / "portal.yaml"
    data = example(member)
    write_yaml(path, data)
    hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before)
    reloader = ConfigReloader(path, before, pool, Outbox(), (hydrator.reconfigure,))
    await hydrator.handle(robot(member, 601, new_form, 10, "2024-07-22T18:00:00Z"))
    assert not await reloader.check()

    path.write_text("survey: [", encoding="utf-8")
    assert not await reloader.check()
    assert reloader.config == before
    moved = {**data, "survey": {**data["survey"], "entity_type_id": 1040}}
    write_yaml(path, moved)
    assert not await reloader.check()
    assert reloader.config == before

    data["survey"]["segments"].append({"category_id": new_form, **LASER_C})
    write_yaml(path, data)
    assert await reloader.check()
    assert reloader.config == after
    assert [s.item_id for s in await submissions(pool, member)] == [601]
    await hydrator.handle(robot(member, 602, new_form, 0, "2024-07-22T18:00:00Z"))
    assert await scores(pool, member) == [(602, 0)]
    assert not await reloader.check()
    assert await reloader.check(force=True)
    assert len(await submissions(pool, member)) == 1


async def test_a_changed_file_is_picked_up_without_a_signal(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    new_form: int,
    tmp_path: Path,
) -> None:
    member = portal.member_id
    before, after = configs(member, new_form)
    hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before)
    await hydrator.handle(robot(member, 651, new_form, 9, "2024-07-22T18:00:00Z"))
    path = tmp_path / "portal.yaml"
    data = example(member)
    write_yaml(path, data)
    reloader = ConfigReloader(path, before, pool, Outbox(), (hydrator.reconfigure,))
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.run(0.1, stop))
    try:
        await asyncio.sleep(0.3)
        assert await submissions(pool, member) == []
        data["survey"]["segments"].append({"category_id": new_form, **LASER_C})
        write_yaml(path, data)

        async def released() -> bool:
            return len(await submissions(pool, member)) == 1

        await until(released, "the changed file to be applied")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert reloader.config == after


async def test_on_start_up_the_held_items_of_mapped_categories_go_out(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    new_form: int,
    tmp_path: Path,
) -> None:
    member = portal.member_id
    before, after = configs(member, new_form)
    hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before)
    for item_id in (701, 702):
        await hydrator.handle(robot(member, item_id, new_form, 5, "2024-07-22T18:00:00Z"))
    path = tmp_path / "portal.yaml"
    write_yaml(path, example(member))
    stop = asyncio.Event()
    task = asyncio.create_task(ConfigReloader(path, after, pool, Outbox(), ()).run(3600.0, stop))

    async def released() -> bool:
        return len(await submissions(pool, member)) == 2

    try:
        await until(released, "the held items to go out on start-up")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert sorted(s.item_id for s in await submissions(pool, member)) == [701, 702]


async def test_a_failed_release_is_retried_on_the_next_check(
    pg_dsn: str,
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    new_form: int,
    tmp_path: Path,
) -> None:
    member = portal.member_id
    before, after = configs(member, new_form)
    await Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before).handle(
        robot(member, 751, new_form, 3, "2024-07-22T18:00:00Z")
    )
    path = tmp_path / "portal.yaml"
    write_yaml(path, example(member))
    closed = await create_pool(pg_dsn, max_size=1)
    await closed.close()
    reloader = ConfigReloader(path, after, closed, Outbox(), ())
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.run(0.1, stop))
    try:
        await asyncio.sleep(0.3)
        assert not task.done()
        assert await submissions(pool, member) == []
        reloader.pool = pool

        async def released() -> bool:
            return len(await submissions(pool, member)) == 1

        await until(released, "the release to be retried")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_the_sweep_holds_items_of_a_category_no_segment_maps(
    pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, new_form: int
) -> None:
    before, _ = configs(portal.member_id, new_form)
    sweeper = Sweeper(pool, Outbox(), b24, before)
    assert (await sweeper.sweep_once()).initialised
    [item_id] = add_answer_items(portal, [{"CATEGORY_ID": new_form, "UF_CRM_5_SCORE": 4}])
    portal.take_outbox()  # the event is lost: ingest was down
    result = await sweeper.sweep_once()
    assert result.submitted == 1
    [body] = [
        b
        for b in await outbox(pool, portal.member_id, "webhook.received")
        if b["source"] == "sweep"
    ]
    await Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before).handle(
        WebhookReceived.model_validate(body)
    )
    held = await pool.fetchval(
        "SELECT item_id FROM ingest_unmapped_items WHERE portal = $1", portal.member_id
    )
    assert held == item_id


async def test_the_ops_page_lists_held_answers_per_category(
    pg_dsn: str, pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, new_form: int
) -> None:
    member = portal.member_id
    before, _ = configs(member, new_form)
    hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before)
    held = [(801, new_form), (802, new_form), (803, 99)]
    for item_id, category_id in held:
        await hydrator.handle(robot(member, item_id, category_id, 6, "2024-07-22T18:00:00Z"))
    token = "ops-token-5d2a"
    app = reports_app(pg_dsn, token)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as http:
            page = await http.get(
                "/ops",
                params={"portal": member},
                headers={"Authorization": f"Bearer {token}"},
            )
    assert page.status_code == 200
    rows = figures(page.text)
    assert rows[f"category-{new_form}"] == {"answers": "2"}
    assert rows["category-99"] == {"answers": "1"}
    assert "Answers waiting for a segment" in page.text


async def test_an_item_held_while_the_config_learns_its_category_goes_out(
    pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, new_form: int
) -> None:
    """The reload released what was held before it; the item being held at that moment is
    released by the hydrator itself."""
    member = portal.member_id
    before, after = configs(member, new_form)
    hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE ingest_unmapped_items IN EXCLUSIVE MODE")
        handling = asyncio.create_task(
            hydrator.handle(robot(member, 901, new_form, 1, "2024-07-22T18:00:00Z"))
        )

        async def blocked() -> bool:
            waiting = await pool.fetchval(
                """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                   WHERE c.relname = 'ingest_unmapped_items' AND NOT l.granted"""
            )
            return bool(waiting)

        await until(blocked, "the hold to wait for the lock")
        hydrator.reconfigure(after)
    await asyncio.wait_for(handling, 10)
    assert [s.item_id for s in await submissions(pool, member)] == [901]


async def test_nps_unmapped_says_what_is_held_and_what_to_do(
    pg_server: str,
    pg_dsn: str,
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    new_form: int,
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
) -> None:
    member = portal.member_id
    before, _ = configs(member, new_form)

    async def nps_unmapped(dsn: str) -> tuple[int, str]:
        monkeypatch.setenv("DATABASE_URL", dsn)
        get_settings.cache_clear()
        try:
            result = await asyncio.to_thread(
                CliRunner().invoke, cli, ["unmapped", "--portal", member]
            )
        finally:
            get_settings.cache_clear()
        return result.exit_code, result.output

    assert await nps_unmapped(pg_dsn) == (
        0,
        "no answers held: every category that sent answers is mapped by a segment\n",
    )
    hydrator = Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), before)
    await hydrator.handle(robot(member, 1001, new_form, 4, "2024-07-22T18:00:00Z"))
    await hydrator.handle(robot(member, 1002, new_form, 9, "2024-07-23T10:30:00Z"))
    code, output = await nps_unmapped(pg_dsn)
    assert code == 0, output
    assert output.splitlines() == [
        f"category {new_form}: 2 answer(s) held, updated 2024-07-22 18:00 .. 2024-07-23 10:30 UTC",
        "2 answer(s) in 1 category(ies) wait for a segment: add one per category to the portal"
        " YAML; ingest picks the change up and scores them once",
    ]
    async with scratch_database(pg_server, scratch_name("test_unmigrated")) as dsn:
        fresh = await asyncpg.connect(dsn)
        try:
            await fresh.execute("DROP TABLE ingest_unmapped_items")
        finally:
            await fresh.close()
        code, output = await nps_unmapped(dsn)
    assert (code, output) == (1, "the database has no ingest tables yet: run `nps migrate`\n")
    code, output = await nps_unmapped("postgresql://postgres@127.0.0.1:1/nps")
    assert code == 1
    assert output.startswith("PostgreSQL (DATABASE_URL) did not answer:")
    assert "Traceback" not in output
