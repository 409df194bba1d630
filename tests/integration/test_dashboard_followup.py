"""The "Follow-up" page, its CSV export and the overview's tile on the real PostgreSQL, with the
follow-up filled by the product's own code (`tests/support/followup.py`): leads and tasks
crm_sync's `EntityWriter` really created on a sandbox portal, dispatch's `Follower` reading what
a person did with them there, escalating the overdue ones, and crm_sync's `DispatchWriter`
creating an escalation task. The reports app's clock is the test's.

The portal's time zone is Moscow (UTC+3), working hours 09:00-18:00 there. On Monday 2026-12-07
at 10:00 UTC (13:00 MSK) the answers of managers 31 and 32 make five leads and tasks:

| name | action | manager | what happens | at 11:00 UTC on Tuesday |
|---|---|---|---|---|
| S1 | service lead | 31 | in work after 50 min, closed after 2 h | closed |
| S2 | service lead | 31 | untouched past 17:00 MSK (4 working h) | 21 h late, escalated (task) |
| S3 | service lead | 32 | in work after 1 h | in work (its SLA met) |
| M1 | marketing lead | 32 | junk after 3 h | closed |
| T1 | head of sales' task | 31 | in work after 30 min, open 24 h | 1 h late, escalation queued |
| E2 | S2's escalation task | 31 | created at 17:00 MSK, untouched (its deadline: 4 h) | 17 h late |

A week before (Monday 2026-11-30) one service lead of manager 31 was closed within an hour.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from services.dispatch import read as followup_read
from services.dispatch.followup import escalation_command_id, follow_id
from services.reports import app as app_module
from services.reports.app import create_app
from services.reports.followup import FOLLOWUP_CSV_HEADER, Escalations
from shared.events import CrmWritten
from tests.support.dashboard import figures
from tests.support.followup import (
    HEAD_OF_SALES,
    HEAD_OF_SERVICE,
    Followed,
    followup_config,
    new_key,
)

TOKEN = "followup-token-7c1d"
WEBHOOK = "https://acme.bitrix24.ru/rest/1/w3bh00k-s3cret/"
ORIGIN = "https://acme.bitrix24.ru"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ZONE = "Europe/Moscow"
MON_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
WEEK_BEFORE = MON_10 - timedelta(days=7)
NOW = MON_10 + timedelta(hours=25)
"""When the pages are read: Tuesday 11:00 UTC (14:00 MSK)."""
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class World:
    portal: str
    made: dict[str, CrmWritten]
    escalation_task: int
    """The task crm_sync created for S2's escalation."""

    @property
    def escalation_follow(self) -> str:
        """The follow-up of S2's escalation task."""
        return str(follow_id(escalation_command_id(follow_id(self.made["S2"].action_id))))

    def entity(self, name: str) -> int:
        entity_id = self.made[name].entity_id
        assert entity_id is not None
        return entity_id


@pytest.fixture(scope="module")
async def world(pool: asyncpg.Pool) -> World:
    followed = Followed(pool, followup_config(ZONE), WEEK_BEFORE)
    before = await followed.created("service")
    followed.at(WEEK_BEFORE + HOUR)
    followed.handle(before, "closed")
    assert await followed.tick(WEEK_BEFORE + HOUR + 5 * MINUTE) == 1

    followed.at(MON_10)
    made = {
        "S1": await followed.created("service"),
        "S2": await followed.created("service"),
        "S3": await followed.created("service", manager=32),
        "M1": await followed.created("marketing", manager=32),
        "T1": await followed.created("task"),
    }
    followed.at(MON_10 + 30 * MINUTE)
    followed.handle(made["T1"], "in_work")
    followed.at(MON_10 + 50 * MINUTE)
    followed.handle(made["S1"], "in_work")
    followed.at(MON_10 + HOUR)
    followed.handle(made["S3"], "in_work")
    await followed.tick(MON_10 + HOUR + 5 * MINUTE)
    followed.at(MON_10 + 2 * HOUR)
    followed.handle(made["S1"], "closed")
    await followed.tick(MON_10 + 2 * HOUR + 5 * MINUTE)
    followed.at(MON_10 + 3 * HOUR)
    followed.handle(made["M1"], "junk")
    await followed.tick(MON_10 + 3 * HOUR + 5 * MINUTE)
    await followed.tick(MON_10 + 4 * HOUR)  # S2's deadline, 17:00 MSK: read and escalated
    task = await followed.escalation_created(made["S2"])
    await followed.tick(MON_10 + 24 * HOUR)  # T1's deadline: read and escalated
    rows = {name: await followed.row(written) for name, written in made.items()}
    assert {name: (row["state"], row["escalation"]) for name, row in rows.items()} == {
        "S1": ("closed", None),
        "S2": ("open", "created"),
        "S3": ("in_work", None),
        "M1": ("closed", None),
        "T1": ("in_work", "queued"),
    }
    for user, name in ((31, "Anna Petrova"), (HEAD_OF_SERVICE, "Ivan Sokolov")):
        await pool.execute(
            "INSERT INTO ingest_users (portal, user_id, name, refreshed_at)"
            " VALUES ($1, $2, $3, now())",
            followed.key,
            user,
            name,
        )
    return World(followed.key, made, task)


@asynccontextmanager
async def client(pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    config = followup_config(ZONE)
    app = create_app(
        pg_dsn,
        TOKEN,
        portal_url=WEBHOOK,
        timezone=ZONE,
        dispatch=config.dispatch,
        clock=lambda: NOW,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as http:
            yield http


async def page(
    http: httpx.AsyncClient, path: str = "/followup", **params: str
) -> tuple[str, dict[str, dict[str, str]]]:
    answer = await http.get(path, params=params, headers=BEARER)
    assert answer.status_code == 200, answer.text
    return answer.text, figures(answer.text)


def loop(
    followed: int,
    open_: int,
    in_work: int,
    closed: int,
    to_change: str,
    to_close: str,
    overdue: int,
    escalated: int,
) -> dict[str, str]:
    return {
        "followed": str(followed),
        "open": str(open_),
        "in_work": str(in_work),
        "closed": str(closed),
        "closed_pct": f"{100 * closed / followed:.1f} %",
        "to_change": to_change,
        "to_close": to_close,
        "overdue": str(overdue),
        "escalated": str(escalated),
    }


async def test_loop_closed_per_action_and_manager_with_the_change(
    pg_dsn: str, world: World
) -> None:
    async with client(pg_dsn) as http:
        html, rows = await page(
            http, portal=world.portal, **{"from": "2026-12-01", "to": "2026-12-07"}
        )
    assert rows["loop"] == loop(6, 2, 2, 2, "55 min", "2.5 h", 3, 2)
    assert rows["change"] == {
        "followed": "+5",
        "previous_followed": "1",
        "closed_pct": "-66.7",
        "previous_closed_pct": "100.0 %",
        "to_close": "+1.5 h",
        "previous_to_close": "1.0 h",
    }
    assert rows["action-service"] == {
        "sla": "4 working h to act",
        **loop(3, 1, 1, 1, "55 min", "2.0 h", 1, 1),
    }
    assert rows["action-marketing"] == {"sla": "no SLA", **loop(1, 0, 0, 1, "3.0 h", "3.0 h", 0, 0)}
    assert rows["action-task"] == {"sla": "24 h to close", **loop(1, 0, 1, 0, "30 min", "—", 1, 1)}
    assert rows["action-escalation"] == {"sla": "4 h to close", **loop(1, 1, 0, 0, "—", "—", 1, 0)}
    assert rows["escalations"] == {"text": "1 task created, 1 queued for crm_sync"}
    assert rows["manager-31"] == loop(4, 2, 1, 1, "40 min", "2.0 h", 3, 2)
    assert rows["manager-32"] == loop(2, 0, 1, 1, "2.0 h", "3.0 h", 0, 0)
    assert ">Anna Petrova</a>" in html
    query = f"from=2026-12-01&amp;to=2026-12-07&amp;portal={world.portal}"
    assert f'href="/followup?{query}&amp;action=service"' in html
    assert f'href="/followup?manager=32&amp;{query}"' in html
    assert 'class="on">Follow-up</a>' in html


async def test_the_open_overdue_ones_link_to_the_portal(pg_dsn: str, world: World) -> None:
    async with client(pg_dsn) as http:
        html, rows = await page(http, portal=world.portal)
    first, second = (rows[str(follow_id(world.made[name].action_id))] for name in ("S2", "T1"))
    assert rows["overdue-total"] == {"total": "3"}
    assert html.index(f"lead {world.entity('S2')}") < html.index(f"task {world.entity('T1')}")
    escalated = rows[world.escalation_follow]
    assert escalated == {
        "action": "escalation task",
        "entity": f"task {world.escalation_task}",
        "state": "open (2)",
        "responsible": "Ivan Sokolov",
        "manager": "Anna Petrova",
        "contact_id": first["contact_id"],
        "created": "2026-12-07 17:00 MSK",
        "deadline": "2026-12-07 21:00 MSK",
        "sla": "4 h to close",
        "late": "17.0 h",
        "escalation": "none: it is the escalation",
    }
    assert first == {
        "action": "service lead",
        "entity": f"lead {world.entity('S2')}",
        "state": "open (NEW)",
        "responsible": "Ivan Sokolov",
        "manager": "Anna Petrova",
        "contact_id": first["contact_id"],
        "created": "2026-12-07 13:00 MSK",
        "deadline": "2026-12-07 17:00 MSK",
        "sla": "4 working h to act",
        "late": "21.0 h",
        "escalation": "task created for Ivan Sokolov",
        "escalation_task": f"task {world.escalation_task}",
    }
    assert second["entity"] == f"task {world.entity('T1')}"
    assert (second["state"], second["late"]) == ("in work (3)", "1.0 h")
    assert second["escalation"] == "queued for user 5 (crm_sync is creating the task)"
    assert f'href="{ORIGIN}/crm/lead/details/{world.entity("S2")}/"' in html
    assert (
        f'href="{ORIGIN}/company/personal/user/{HEAD_OF_SALES}/tasks/task/view/'
        f'{world.entity("T1")}/"' in html
    )
    assert (
        f'href="{ORIGIN}/company/personal/user/{HEAD_OF_SERVICE}/tasks/task/view/'
        f'{world.escalation_task}/"' in html
    )
    assert "w3bh00k" not in html
    for closed in ("S1", "S3", "M1"):
        assert str(follow_id(world.made[closed].action_id)) not in rows


async def test_filters_narrow_the_page(pg_dsn: str, world: World) -> None:
    async with client(pg_dsn) as http:
        _, service = await page(http, portal=world.portal, action="service")
        _, olga = await page(http, portal=world.portal, manager="32")
        _, saturday = await page(
            http, portal=world.portal, **{"from": "2026-12-05", "to": "2026-12-05"}
        )
        _, monday_msk = await page(
            http, portal=world.portal, **{"from": "2026-12-07", "to": "2026-12-07"}
        )
        wrong = await http.get("/followup", params={"action": "lead"}, headers=BEARER)
    assert service["loop"]["followed"] == "4"  # the week before's too: no dates
    actions = {key: row["followed"] for key, row in service.items() if key.startswith("action-")}
    assert actions == {"action-service": "4"}
    assert service["overdue-total"] == {"total": "1"}
    assert olga["loop"] == loop(2, 0, 1, 1, "2.0 h", "3.0 h", 0, 0)
    assert olga["overdue-total"] == {"total": "0"}
    assert "loop" not in saturday
    assert saturday["followed-in-all"] == {"followed": "7"}
    assert monday_msk["loop"]["followed"] == "6"
    assert wrong.status_code == 422
    assert (
        "action: expected one of service, marketing, task, call_task, escalation, got &#x27;lead"
        in wrong.text
    )


async def test_nothing_followed_says_how_to_start(pg_dsn: str) -> None:
    async with client(pg_dsn) as http:
        html, rows = await page(http, portal=new_key())
        overview, tiles = await page(http, "/", portal=new_key())
    assert "Nothing is followed yet: start dispatch" in html
    assert "loop" not in rows
    assert "followup" not in tiles
    assert "overdue follow-up" not in overview


async def test_the_overview_tile_counts_the_overdue_ones_and_links_to_them(
    pg_dsn: str, world: World
) -> None:
    async with client(pg_dsn) as http:
        html, rows = await page(http, "/", portal=world.portal)
        _, olga = await page(http, "/", portal=world.portal, manager="32")
    assert rows["followup"] == {"overdue": "3"}
    assert f'<a class="tile late" href="/followup?portal={world.portal}">' in html
    assert olga["followup"] == {"overdue": "0"}


async def test_the_csv_holds_every_overdue_one(
    pg_dsn: str, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client(pg_dsn) as http:
        answer = await http.get("/followup.csv", params={"portal": world.portal}, headers=BEARER)
        monkeypatch.setattr(app_module, "CSV_BATCH", 1)
        chunked = await http.get("/followup.csv", params={"portal": world.portal}, headers=BEARER)
        olga = await http.get(
            "/followup.csv", params={"portal": world.portal, "manager": "32"}, headers=BEARER
        )
        refused = await http.get("/followup.csv", params={"portal": world.portal})
        wrong = await http.get("/followup.csv", params={"action": "lead"}, headers=BEARER)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="followup-2026-12-08.csv"' in answer.headers["content-disposition"]
    assert answer.content.startswith(b"\xef\xbb\xbf")
    header, *lines = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert tuple(header) == FOLLOWUP_CSV_HEADER
    assert chunked.content == answer.content
    assert [line[1] for line in lines] == [
        f"lead {world.entity('S2')}",
        f"task {world.escalation_task}",
        f"task {world.entity('T1')}",
    ]
    s2 = dict(zip(header, lines[0], strict=True))
    assert s2 == {
        "action": "service lead",
        "entity": f"lead {world.entity('S2')}",
        "entity link": f"{ORIGIN}/crm/lead/details/{world.entity('S2')}/",
        "state": "open (NEW)",
        "responsible": "Ivan Sokolov",
        "manager": "Anna Petrova",
        "contact": s2["contact"],
        "contact link": f"{ORIGIN}/crm/contact/details/{s2['contact']}/",
        "created": "2026-12-07 13:00 MSK",
        "SLA": "4 working h to act",
        "SLA deadline": "2026-12-07 17:00 MSK",
        "needed by then": "acted on",
        "hours overdue": "21.0",
        "escalation": "task created for Ivan Sokolov",
        "escalation task id": str(world.escalation_task),
        "escalation task link": (
            f"{ORIGIN}/company/personal/user/{HEAD_OF_SERVICE}/tasks/task/view/"
            f"{world.escalation_task}/"
        ),
    }
    assert s2["contact"].isdigit()
    e2 = dict(zip(header, lines[1], strict=True))
    assert (e2["action"], e2["SLA"], e2["needed by then"], e2["hours overdue"]) == (
        "escalation task",
        "4 h to close",
        "closed",
        "17.0",
    )
    assert (e2["escalation"], e2["escalation task id"]) == ("none: it is the escalation", "")
    t1 = dict(zip(header, lines[2], strict=True))
    assert (t1["needed by then"], t1["hours overdue"], t1["state"]) == (
        "closed",
        "1.0",
        "in work (3)",
    )
    assert olga.content.decode("utf-8-sig").splitlines() == [",".join(FOLLOWUP_CSV_HEADER)]
    assert refused.status_code == 401
    assert wrong.status_code == 422
    assert "action: expected one of" in wrong.text


async def test_an_escalation_task_made_before_they_were_followed_is_still_shown(
    world: World, pool: asyncpg.Pool
) -> None:
    """S2's escalation task without a follow-up of its own (made before escalation tasks were
    followed, migration 0615): no `escalation task` row, but the escalations' line says so."""
    where = followup_read.FollowupFilter(portal=world.portal)
    async with pool.acquire() as conn:
        followed = await followup_read.loop_closed_total(conn, NOW, where)
        assert (followed["escalation_created"], followed["escalation_unfollowed"]) == (1, 0)
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(
                "DELETE FROM dispatch_followups WHERE follow_id = $1::uuid",
                world.escalation_follow,
            )
            before = await followup_read.loop_closed_total(conn, NOW, where)
        finally:
            await transaction.rollback()  # the module's world stays as it was
    assert (before["escalation_created"], before["escalation_unfollowed"]) == (1, 1)
    assert Escalations.of(before).text == (
        "1 task created (1 made before they were followed: not in the table), 1 queued for crm_sync"
    )
