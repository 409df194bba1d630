"""The "Asked" page, its CSV export and the sent date of all ratings on the real PostgreSQL, with
dispatch's register filled by dispatch's own handlers (a `Dispatcher` on the portal channel),
survey page answers written by crm_sync's `SurveyWriter` into a sandbox portal, a call task
refused by crm_sync's `DispatchWriter`, and the answers scored by scoring's handler.

The portal's time zone is Moscow (UTC+3): the requests of Monday 2026-12-07 10:00 UTC are sent
on 2026-12-07 13:00 MSK, the two of Saturday 21:30 UTC on Sunday 2026-12-13 00:30 MSK.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.dispatch import DispatchWriter
from services.crm_sync.surveys import SurveyWriter
from services.reports import app as app_module
from services.reports.app import create_app
from services.reports.asked import ASKED_CSV_HEADER
from services.scoring.handlers import score_submission
from shared.events import DispatchCommand, ProductAnswer, SurveyAnswered
from shared.outbox import Outbox
from tests.support.crm_sync import client_for, new_portal
from tests.support.dashboard import figures
from tests.support.dispatch import (
    DEAL_SURVEY,
    LASER_PRODUCT,
    LASER_SURVEY,
    Register,
    dispatch_config,
)
from tests.support.scoring import make_submission

TOKEN = "asked-token-5e7a"
WEBHOOK = "https://acme.bitrix24.ru/rest/1/w3bh00k-s3cret/"
ORIGIN = "https://acme.bitrix24.ru"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ZONE = "Europe/Moscow"
MONDAY = "2026-12-07 13:00 MSK"
SUNDAY = "2026-12-13 00:30 MSK"


@dataclass(frozen=True)
class Asked:
    portal: str
    ids: dict[str, uuid.UUID]
    """A: a deal survey answered; B: its laser survey, answered on the survey page; C: opened,
    reminded, unanswered, call task 7001; D: unanswered without a responsible, its call task
    refused by the portal; E, F: sent on Sunday, awaiting an answer (F opened)."""
    deals: dict[str, int]
    item: int
    """The smart-process item crm_sync wrote B's answer into."""


async def _answer_on_the_survey_page(
    pool: asyncpg.Pool, register: Register, request_id: uuid.UUID
) -> int:
    """B's answer as the survey page gives it: crm_sync writes it into an item, dispatch
    records it; the item id."""
    config = dispatch_config(ZONE)
    coalescer = CommandCoalescer(client_for(new_portal(contacts=5)), window_s=0.01)
    answer = SurveyAnswered(
        correlation_id="test",
        request_id=request_id,
        version=1,
        portal=register.portal,
        contact_id=1,
        category_id=12,
        scale="0-10",
        answers=[ProductAnswer(sku="EQ-LASER-A", name="Laser A", score=9)],
        answered_at=register.now,
    )
    written = await SurveyWriter(pool, Outbox(), coalescer, config).write(answer)
    assert written is not None
    assert written.entity_id is not None
    await register.answered(request_id)
    return written.entity_id


async def _refused_call_task(pool: asyncpg.Pool, request_id: uuid.UUID) -> None:
    """crm_sync carries D's call task out on a portal without its deal: refused."""
    body = await pool.fetchval(
        "SELECT body FROM outbox WHERE routing_key = 'dispatch.call_task'"
        " AND body->>'request_id' = $1",
        str(request_id),
    )
    command = DispatchCommand.model_validate_json(body)
    coalescer = CommandCoalescer(client_for(new_portal(contacts=5)), window_s=0.01)
    written = await DispatchWriter(pool, Outbox(), coalescer).carry_out(command)
    assert written is not None
    assert written.outcome == "failed"


@pytest.fixture(scope="module")
async def asked(pool: asyncpg.Pool) -> Asked:
    register = Register(pool, dispatch_config(ZONE, window={"start": "00:00", "end": "23:59"}))
    first = await register.sale(601, 1, responsible_id=31, products=(LASER_PRODUCT,))
    c = (await register.sale(602, 2, responsible_id=32))[DEAL_SURVEY]
    d = (await register.sale(603, 3, responsible_id=None))[DEAL_SURVEY]
    await register.sale(604, None)  # no contact: skipped
    a, b = first[DEAL_SURVEY], first[LASER_SURVEY]
    assert len(await register.tick()) == 4
    register.later(hours=1)
    await register.answered(a)
    item = await _answer_on_the_survey_page(pool, register, b)
    await register.opened(c)
    register.later(days=3, hours=-1)
    assert len(await register.tick()) == 2  # the reminders of C and D
    register.later(days=2)
    await register.tick()  # C and D unanswered: their call tasks
    await register.written(c, "call_task", 0, entity_id=7001)
    await _refused_call_task(pool, d)
    register.later(hours=11, minutes=30)
    second = await register.sale(605, 4, responsible_id=32, products=(LASER_PRODUCT,))
    e, f = second[DEAL_SURVEY], second[LASER_SURVEY]
    assert len(await register.tick()) == 2
    register.later(hours=1)
    await register.opened(f)
    ids = {"A": a, "B": b, "C": c, "D": d, "E": e, "F": f}
    rows = {name: await register.row(request_id) for name, request_id in ids.items()}
    assert {name: row["state"] for name, row in rows.items()} == {
        "A": "answered",
        "B": "answered",
        "C": "unanswered",
        "D": "unanswered",
        "E": "sent",
        "F": "opened",
    }
    deals = {name: row["nps_deal_id"] for name, row in rows.items() if row["nps_deal_id"]}
    await _score(pool, register.key, deals["A"], item)
    await pool.execute(
        "INSERT INTO ingest_users (portal, user_id, name, refreshed_at)"
        " VALUES ($1, 32, 'Olga Petrova', now())",
        register.key,
    )
    return Asked(register.key, ids, deals, item)


async def _score(pool: asyncpg.Pool, portal: str, deal: int, item: int) -> None:
    """The answers of A (its NPS deal) and B (its item) as ingest reads them back, and one of a
    form filled in the portal (no survey was sent for it)."""
    at = "2026-12-07T14:00:00+03:00"
    for submission in (
        make_submission(
            ("DEAL-SALES", 10),
            item_id=deal,
            member_id=portal,
            kind="deal",
            entity_type_id=2,
            category_id=20,
            segment=DEAL_SURVEY,
            submitted_at=at,
            updated_at=at,
        ),
        make_submission(
            ("EQ-LASER-A", 9),
            item_id=item,
            member_id=portal,
            kind="equipment",
            category_id=12,
            segment=LASER_SURVEY,
            submitted_at=at,
            updated_at=at,
        ),
        make_submission(
            ("EQ-LASER-A", 3),
            item_id=item + 1000,
            member_id=portal,
            kind="equipment",
            category_id=12,
            segment=LASER_SURVEY,
        ),
    ):
        await score_submission(pool, Outbox(), submission)


@asynccontextmanager
async def client(pg_dsn: str, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    config = dispatch_config(ZONE)
    app = create_app(
        pg_dsn, TOKEN, portal_url=WEBHOOK, timezone=ZONE, dispatch=config.dispatch, **options
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as http:
            yield http


async def page(http: httpx.AsyncClient, **params: str) -> tuple[str, dict[str, dict[str, str]]]:
    answer = await http.get("/asked", params=params, headers=BEARER)
    assert answer.status_code == 200, answer.text
    return answer.text, figures(answer.text)


def funnel(sent: int, opened: int, answered: int, awaiting: int, unanswered: int) -> dict[str, str]:
    def rate(part: int) -> str:
        return f"{100 * part / sent:.1f} %" if sent else "—"

    return {
        "sent": str(sent),
        "opened": str(opened),
        "open_rate": rate(opened),
        "answered": str(answered),
        "answer_rate": rate(answered),
        "awaiting": str(awaiting),
        "unanswered": str(unanswered),
    }


async def test_the_response_rate_per_survey_manager_and_period(pg_dsn: str, asked: Asked) -> None:
    async with client(pg_dsn) as http:
        html, rows = await page(http, portal=asked.portal)
        _, daily = await page(http, portal=asked.portal, period="day")
    assert rows["asked"] == funnel(6, 4, 2, 2, 2)
    assert rows[f"survey-{DEAL_SURVEY}"] == funnel(4, 2, 1, 1, 2)
    assert rows[f"survey-{LASER_SURVEY}"] == funnel(2, 2, 1, 1, 0)
    assert rows["manager-31"] == funnel(2, 2, 2, 0, 0)
    assert rows["manager-32"] == funnel(3, 2, 0, 2, 1)
    assert rows["manager-none"] == funnel(1, 0, 0, 0, 1)
    assert rows["period-2026-12"] == funnel(6, 4, 2, 2, 2)
    assert daily["period-2026-12-07"] == funnel(4, 3, 2, 0, 2)
    assert daily["period-2026-12-13"] == funnel(2, 1, 0, 2, 0)  # Saturday 21:30 UTC
    assert ">Olga Petrova</a>" in html
    assert f'href="/asked?segment=Laser+A&amp;portal={asked.portal}"' in html
    assert f'href="/asked?manager=32&amp;portal={asked.portal}"' in html
    assert 'class="on">Asked</a>' in html


async def test_filters_and_the_change_against_the_previous_period(
    pg_dsn: str, asked: Asked
) -> None:
    async with client(pg_dsn) as http:
        _, week = await page(
            http, portal=asked.portal, **{"from": "2026-12-08", "to": "2026-12-14"}
        )
        _, saturday = await page(
            http, portal=asked.portal, **{"from": "2026-12-12", "to": "2026-12-12"}
        )
        _, laser = await page(http, portal=asked.portal, segment="laser a")
        _, by_id = await page(http, portal=asked.portal, segment="12", product="EQ-LASER-A")
        _, olga = await page(http, portal=asked.portal, manager="32")
    assert week["asked"] == funnel(2, 1, 0, 2, 0)
    assert week["change"] == {
        "sent": "-2",
        "previous_sent": "4",
        "answer_rate": "-50.0",
        "previous_answer_rate": "50.0 %",
        "open_rate": "-25.0",
        "previous_open_rate": "75.0 %",
    }
    assert "asked" not in saturday  # sent on Sunday in Moscow
    assert saturday["register"] == {
        "states": "2 answered, 2 unanswered, 1 opened, 1 sent, 1 skipped"
    }
    assert laser["asked"] == by_id["asked"] == funnel(2, 2, 1, 1, 0)
    assert olga["asked"] == funnel(3, 2, 0, 2, 1)


async def test_who_is_awaited_and_who_never_answered(pg_dsn: str, asked: Asked) -> None:
    async with client(pg_dsn) as http:
        html, rows = await page(http, portal=asked.portal)
    ids = {name: str(request_id) for name, request_id in asked.ids.items()}
    assert rows["awaiting-total"] == {"total": "2"}
    assert rows[ids["E"]] == {
        "contact_id": "4",
        "survey": DEAL_SURVEY,
        "manager": "Olga Petrova",
        "deal": f"NPS deal {asked.deals['E']}",
        "sent": SUNDAY,
        "reminders": "0",
        "opened": "—",
        "next_reminder": "2026-12-16 00:30 MSK",
    }
    assert rows[ids["F"]]["survey"] == f"{LASER_SURVEY}EQ-LASER-A"
    assert rows[ids["F"]]["deal"] == "sale 605"
    assert rows[ids["F"]]["opened"] == "2026-12-13 01:30 MSK"
    assert rows["unanswered-total"] == {"total": "2"}
    assert rows[ids["C"]] == {
        "contact_id": "2",
        "survey": DEAL_SURVEY,
        "manager": "Olga Petrova",
        "deal": f"NPS deal {asked.deals['C']}",
        "sent": MONDAY,
        "reminders": "1",
        "opened": "2026-12-07 14:00 MSK",
        "closed": "2026-12-12 13:00 MSK",
        "call_task": "created",
        "task_id": "task 7001",
    }
    assert f'href="{ORIGIN}/company/personal/user/32/tasks/task/view/7001/"' in html
    assert rows[ids["D"]]["manager"] == "no manager"
    assert rows[ids["D"]]["call_task"] == (
        f"not created (deal {asked.deals['D']} (call_task.deal_id) does not exist on the portal)"
    )
    assert "task_id" not in rows[ids["D"]]
    for answered in ("A", "B"):
        assert ids[answered] not in rows
    assert f'href="{ORIGIN}/crm/deal/details/{asked.deals["E"]}/"' in html
    assert f'href="{ORIGIN}/crm/contact/details/4/"' in html
    assert "w3bh00k" not in html


async def test_an_empty_register_says_how_to_start(pg_dsn: str) -> None:
    async with client(pg_dsn) as http:
        html, rows = await page(http, portal=f"m-none-{uuid.uuid4().hex[:8]}")
    assert "No survey was sent yet: configure dispatch, docs/dispatch.md." in html
    assert "asked" not in rows


async def test_the_csv_holds_every_request_of_the_selection(
    pg_dsn: str, asked: Asked, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client(pg_dsn) as http:
        answer = await http.get("/asked.csv", params={"portal": asked.portal}, headers=BEARER)
        monkeypatch.setattr(app_module, "CSV_BATCH", 2)
        chunked = await http.get("/asked.csv", params={"portal": asked.portal}, headers=BEARER)
        sunday = await http.get(
            "/asked.csv", params={"portal": asked.portal, "from": "2026-12-13"}, headers=BEARER
        )
        refused = await http.get("/asked.csv", params={"portal": asked.portal})
        wrong = await http.get("/asked.csv", params={"manager": "Olga"}, headers=BEARER)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="asked-' in answer.headers["content-disposition"]
    assert answer.content.startswith(b"\xef\xbb\xbf")
    header, *lines = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert tuple(header) == ASKED_CSV_HEADER
    assert chunked.content == answer.content
    assert len(lines) == 6
    assert [line[0] for line in lines] == sorted((line[0] for line in lines), reverse=True)
    by_status = sorted(line[9] for line in lines)
    assert by_status == [
        "answered",
        "answered",
        "awaiting answer",
        "awaiting answer",
        "unanswered",
        "unanswered",
    ]
    c = next(dict(zip(header, line, strict=True)) for line in lines if line[3] == "2")
    assert c == {
        "sent": MONDAY,
        "survey": DEAL_SURVEY,
        "product": "",
        "contact": "2",
        "contact link": f"{ORIGIN}/crm/contact/details/2/",
        "responsible": "Olga Petrova",
        "deal": f"NPS deal {asked.deals['C']}",
        "deal link": f"{ORIGIN}/crm/deal/details/{asked.deals['C']}/",
        "channel": "portal",
        "status": "unanswered",
        "reminders": "1",
        "opened": "2026-12-07 14:00 MSK",
        "answered": "",
        "next reminder": "",
        "closed": "2026-12-12 13:00 MSK",
        "call task": "created",
        "call task id": "7001",
        "call task link": f"{ORIGIN}/company/personal/user/32/tasks/task/view/7001/",
    }
    assert sunday.status_code == 200
    later = list(csv.reader(io.StringIO(sunday.content.decode("utf-8-sig"))))[1:]
    assert sorted((line[1], line[2], line[9]) for line in later) == [
        (DEAL_SURVEY, "", "awaiting answer"),
        (LASER_SURVEY, "EQ-LASER-A", "awaiting answer"),
    ]
    assert refused.status_code == 401
    assert wrong.status_code == 422
    assert "manager: expected a user id" in wrong.text


async def test_all_ratings_show_when_the_survey_was_sent(pg_dsn: str, asked: Asked) -> None:
    async with client(pg_dsn) as http:
        listed = await http.get("/ratings", params={"portal": asked.portal}, headers=BEARER)
        export = await http.get("/ratings.csv", params={"portal": asked.portal}, headers=BEARER)
    assert listed.status_code == 200, listed.text
    rows = figures(listed.text)
    deal = f"{asked.portal}:D_{asked.deals['A']}:DEAL-SALES"
    item = f"{asked.portal}:{asked.item}:EQ-LASER-A"
    by_hand = f"{asked.portal}:{asked.item + 1000}:EQ-LASER-A"
    assert rows[deal]["sent"] == MONDAY
    assert rows[item]["sent"] == MONDAY
    assert rows[by_hand]["sent"] == "—"
    lines = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    sent = {line[3]: line[0] for line in lines[1:]}
    assert sent == {
        f"deal {asked.deals['A']}": MONDAY,
        f"item {asked.item}": MONDAY,
        f"item {asked.item + 1000}": "",
    }
