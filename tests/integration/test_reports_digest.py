"""The weekly digest against the real PostgreSQL and a real SMTP server (aiosmtpd, in process),
on a moved clock: scored answers (scoring's own write code) and overdue follow-ups (dispatch's)
become one e-mail at the configured moment, sent once across rounds and replicas; an
unreachable server is tried again, a refusal is recorded, a service started too late skips the
week."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
import yaml
from fastapi import FastAPI
from pydantic import SecretStr
from structlog.testing import capture_logs

from services.dispatch import followup_store
from services.harness.stack import free_port
from services.reports.digest_job import RETRY, DigestJob, installed_digests, run_digest
from services.reports.main import serve_with_digest
from services.scoring.handlers import score_submission
from shared import portal_store
from shared.bitrix24.oauth import TokenPair
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from shared.settings import Settings
from shared.smtp import SmtpMailer, SmtpSettings
from tests.support import forget_served_portal
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.scoring import make_submission
from tests.support.smtp import Inbox, smtp_server

MONDAY_9 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LASER: dict[str, Any] = {"kind": "equipment", "category_id": 12, "segment": "Laser A"}


def digest_config(member: str) -> PortalConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["portal"]["timezone"] = "UTC"
    data["portal"]["member_id"] = member
    data["dispatch"]["language"] = "en"
    data["dispatch"]["digest"] = {
        "to": ["head@example.com", "sales@example.com"],
        "weekday": "mon",
        "time": "09:00",
        "comments": 2,
    }
    return parse_portal_config(data)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def job(pool: asyncpg.Pool, member: str, port: int, clock: Clock) -> DigestJob:
    mailer = SmtpMailer(SmtpSettings(port=port, timeout_s=5, _env_file=None))
    return DigestJob(pool, digest_config(member), mailer, min_answers=10, clock=clock)


async def answered(pool: asyncpg.Pool, member: str) -> None:
    """Last week (30 Nov - 6 Dec): 10, 9, 3, 0 (NPS 0); the week before: 10, 10, 7 (NPS 66.7)."""
    week = [
        (10, "2026-12-01", None),
        (9, "2026-12-02", "Great"),
        (3, "2026-12-03", "Broke after a week"),
        (0, "2026-12-05", "Nobody came to fix it"),
    ]
    before = [(10, "2026-11-24", None), (10, "2026-11-25", None), (7, "2026-11-27", "ok")]
    for item, (score, day, comment) in enumerate(week + before, start=1):
        at = f"{day}T10:00:00+00:00"
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("EQ-LASER-A", score),
                item_id=item,
                member_id=member,
                submitted_at=at,
                updated_at=at,
                **{**LASER, "comment": comment},
            ),
        )


async def overdue_lead(pool: asyncpg.Pool, member: str, entity_id: int) -> None:
    async with pool.acquire() as conn:
        await followup_store.record(
            conn,
            followup_store.NewFollowup(
                follow_id=uuid.uuid4(),
                portal=member,
                action="service",
                action_id=f"{member}:{entity_id}:service",
                entity_type="lead",
                entity_id=entity_id,
                responsible_id=17,
                manager_id=31,
                contact_id=3,
                deal_id=None,
                answer_id=None,
                request_id=None,
                created_at=MONDAY_9 - timedelta(days=3),
                next_read_at=MONDAY_9,
                sla_hours=4,
                sla_working_hours=False,
                sla_until="acted",
                due_at=MONDAY_9 - timedelta(days=2),
            ),
        )


async def state(pool: asyncpg.Pool, member: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT edition, state, recipients, attempts, reason FROM reports_digests"
        " WHERE portal = $1",
        member,
    )
    return [dict(row) for row in rows]


def member() -> str:
    return f"m-digest-{uuid.uuid4().hex[:10]}"


async def test_the_digest_goes_out_once_at_its_moment_with_the_week_s_figures(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    portal = member()
    await answered(pool, portal)
    await overdue_lead(pool, portal, 812)
    clock = Clock(MONDAY_9 - timedelta(hours=1))
    first = job(pool, portal, inbox[1], clock)
    assert await first.tick() is None  # before its moment
    assert inbox[0].messages == []

    clock.now = MONDAY_9 + timedelta(minutes=1)
    assert await first.tick() == "sent"
    assert await first.tick() is None
    replica = job(pool, portal, inbox[1], clock)
    assert await replica.tick() is None  # a second replica (or a restart) finds it sent
    clock.now = MONDAY_9 + timedelta(hours=6)
    assert await replica.tick() is None

    (message,) = inbox[0].messages
    assert message["Subject"] == "NPS weekly digest 2026-11-30 \u2013 2026-12-06: 0"
    assert message["To"] == "head@example.com, sales@example.com"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "NPS: 0 (4 answers" in text
    assert "too few answers to rely on" in text  # 4 < 10
    assert "the week before: 66.7 (3 answers), change: -66.7" in text
    worst = [line for line in text.splitlines() if line.startswith("- ")]
    assert worst[:2] == [
        "- 0 · eq-laser-a · 2026-12-05: Nobody came to fix it",
        "- 3 · eq-laser-a · 2026-12-03: Broke after a week",
    ]
    assert "Overdue follow-ups (1)" in text
    assert "service lead #812: 48.0 h overdue" in text
    assert await state(pool, portal) == [
        {
            "edition": MONDAY_9.date(),
            "state": "sent",
            "recipients": 2,
            "attempts": 1,
            "reason": None,
        }
    ]


async def test_an_unreachable_server_is_tried_again_and_a_refusal_is_recorded(
    pool: asyncpg.Pool,
) -> None:
    portal, port = member(), free_port()
    clock = Clock(MONDAY_9 + timedelta(minutes=1))
    digest = job(pool, portal, port, clock)
    assert await digest.tick() == "deferred"  # nothing listens there yet
    clock.now += timedelta(minutes=1)
    assert await digest.tick() is None  # waits before the next try
    handler = Inbox()
    with smtp_server(handler, port):
        clock.now += RETRY
        assert await digest.tick() == "sent"
    assert len(handler.messages) == 1
    (row,) = await state(pool, portal)
    assert (row["state"], row["attempts"]) == ("sent", 2)

    refused = member()
    with smtp_server(Inbox("550 5.7.1 relaying denied")) as port:
        digest = job(pool, refused, port, clock)
        assert await digest.tick() == "failed"
        clock.now += timedelta(hours=1)
        assert await digest.tick() is None  # for good: not tried again
    (row,) = await state(pool, refused)
    assert row["state"] == "failed"
    assert "relaying denied" in row["reason"]


async def test_a_service_started_a_day_late_skips_the_week(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    portal = member()
    clock = Clock(MONDAY_9 + timedelta(days=1, minutes=1))
    assert await job(pool, portal, inbox[1], clock).tick() is None
    assert inbox[0].messages == []
    assert await state(pool, portal) == []


async def test_the_reports_process_serves_and_runs_the_digest_timer_until_stopped(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(digest_config(member()).model_dump(mode="json")))
    configured = settings.model_copy(update={"nps_config": path})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(FastAPI(), host="127.0.0.1", port=port, log_config=None))
    with capture_logs() as logged:
        serving = asyncio.create_task(
            serve_with_digest(server, configured, settings.database_url.get_secret_value())
        )
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.05)
        server.should_exit = True
        async with asyncio.timeout(30):
            await serving  # the timer stopped and its pool closed with the server
    assert {"event": "digest_scheduled", "weekday": "mon", "log_level": "info"} in logged


async def test_an_unpinned_digest_is_about_the_learned_portal_only(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    learned, other = member(), member()
    await answered(pool, learned)
    await answered(pool, other)  # would double every count if it were read too
    await forget_served_portal(pool)
    await pool.execute("INSERT INTO ingest_portal (member_id) VALUES ($1)", learned)
    await pool.execute("DELETE FROM reports_digests WHERE portal = 'default'")
    config = digest_config(learned)
    unpinned = config.model_copy(
        update={"portal": config.portal.model_copy(update={"member_id": None})}
    )
    mailer = SmtpMailer(SmtpSettings(port=inbox[1], timeout_s=5, _env_file=None))
    digest = DigestJob(
        pool, unpinned, mailer, min_answers=10, clock=Clock(MONDAY_9 + timedelta(minutes=1))
    )
    try:
        assert await digest.tick() == "sent"
    finally:
        await forget_served_portal(pool)
    (message,) = inbox[0].messages
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "NPS: 0 (4 answers" in text
    assert "the week before: 66.7 (3 answers)" in text


async def test_in_application_mode_each_installed_portal_with_its_own_digest_gets_its_own(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    """Two installed portals whose stored configurations ask for a digest each get theirs, to
    their own recipients, with their own figures only; a portal without a configuration of its
    own (the template's recipients are the deployment's) and an uninstalled one get none."""
    alpha, beta, plain, gone = (member() for _ in range(4))
    book = TokenBook(pool, OAuthServer(AppCredentials("http://oauth.invalid", "c", SecretStr("s"))))
    for key in (alpha, beta, plain, gone):
        pair = TokenPair("at", "rt", 2e9, key, f"https://{key}.example/rest/", "crm")
        await book.install(pair, domain=f"{key}.example", application_token=f"t-{key}")
    await book.uninstall(gone)
    await answered(pool, alpha)  # NPS 0 of 4 answers
    for item, day in enumerate(("2026-12-01", "2026-12-02"), start=1):
        at = f"{day}T10:00:00+00:00"
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("EQ-LASER-A", 10),
                item_id=item,
                member_id=beta,
                submitted_at=at,
                updated_at=at,
                **LASER,
            ),
        )
    for key in (alpha, beta, gone):
        data = digest_config(key).model_dump(mode="json")
        data["portal"]["member_id"] = None  # the portal is the installed one, not pinned
        data["dispatch"]["digest"]["to"] = [f"head@{key}.example"]
        async with pool.acquire() as conn:
            await portal_store.save(
                conn, key, yaml.safe_dump(data), by="test", expected_version=None
            )
    mailer = SmtpMailer(SmtpSettings(port=inbox[1], timeout_s=5, _env_file=None))
    stop = asyncio.Event()

    async def one_round() -> list[DigestJob]:
        stop.set()  # this round only
        return await installed_digests(
            pool, mailer, min_answers=10, clock=Clock(MONDAY_9 + timedelta(minutes=1))
        )

    try:
        with capture_logs() as logged:
            await run_digest(one_round, stop, every_s=0)
    finally:
        await pool.execute(
            "DELETE FROM bitrix24_app_portals WHERE member_id = ANY($1::text[])",
            [alpha, beta, plain, gone],
        )
        await pool.execute(
            "DELETE FROM portal_configs WHERE portal = ANY($1::text[])", [alpha, beta, gone]
        )
        await book.oauth.aclose()
    texts = {}
    for message in inbox[0].messages:
        body = message.get_body(("plain",))
        assert body is not None
        texts[message["To"]] = body.get_content()
    assert set(texts) == {f"head@{alpha}.example", f"head@{beta}.example"}
    assert "NPS: 0 (4 answers" in texts[f"head@{alpha}.example"]
    assert "NPS: 100 (2 answers" in texts[f"head@{beta}.example"]
    assert [len(await state(pool, key)) for key in (alpha, beta, plain, gone)] == [1, 1, 0, 0]
    sent = sorted(e["portal"] for e in logged if e["event"] == "digest_sent")
    assert sent == sorted([alpha, beta])
