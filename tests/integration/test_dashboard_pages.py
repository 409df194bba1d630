"""Dashboard pages on the real PostgreSQL and RabbitMQ: the figures shown equal `/api/report`'s,
the token is required, filters narrow every view, and the ops view reads conflicts and DLQs."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel

from services.reports.app import create_app
from services.reports.auth import COOKIE
from services.reports.queries import conflicts
from services.scoring.handlers import score_submission
from services.scoring.report import cosmetics_left_out_note
from shared.outbox import Outbox
from tests.support.cosmetics import LEFT_OUT, PER_PRODUCT, score_the_check
from tests.support.dashboard import figures, shown, shown_scores
from tests.support.scoring import make_submission

TOKEN = "dashboard-token-7c1e"
WEBHOOK = "https://acme.bitrix24.ru/rest/1/w3bh00k-s3cret/"
ORIGIN = "https://acme.bitrix24.ru"
SCRIPT = "<script>alert('x')</script>"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
LASER = {"kind": "equipment", "category_id": 12, "segment": "Laser A"}


@pytest.fixture(scope="module")
async def portal(pool: asyncpg.Pool) -> str:
    """Cosmetics (SERUM, CREAM) and an equipment laser with a negative NPS, over four months."""
    member = f"m-dash-{uuid.uuid4().hex[:10]}"
    submissions: list[tuple[int, list[tuple[str, int | None]], str, dict[str, Any]]] = [
        (1, [("SERUM", 10), ("CREAM", 8)], "2024-03-05T10:00:00+03:00", {"responsible_id": 5}),
        (2, [("SERUM", 3)], "2024-04-10T10:00:00+03:00", {"responsible_id": 7, "comment": SCRIPT}),
        (3, [("CREAM", 9), ("SERUM", 9)], "2024-05-20T10:00:00+03:00", {"responsible_id": 7}),
        (
            10,
            [("LASER", 2)],
            "2024-04-02T09:00:00+03:00",
            {**LASER, "responsible_id": 5, "service_request": True, "contact_id": 601},
        ),
        (
            11,
            [("LASER", 0)],
            "2024-05-03T09:00:00+03:00",
            {**LASER, "responsible_id": None, "contact_id": 602, "comment": "broken again"},
        ),
        (
            12,
            [("LASER", None)],
            "2024-05-28T09:00:00+03:00",
            {**LASER, "responsible_id": 7, "service_request": True, "contact_id": 603},
        ),
        (13, [("LASER", 9)], "2024-06-01T09:00:00+03:00", {**LASER, "responsible_id": 5}),
    ]
    for item, scores, at, extra in submissions:
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                *scores, item_id=item, member_id=member, submitted_at=at, updated_at=at, **extra
            ),
        )
    return member


@asynccontextmanager
async def client(
    pg_dsn: str, amqp_url: str | None = None, token: str = TOKEN, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pg_dsn, token, portal_url=WEBHOOK, rabbitmq_url=amqp_url, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as http:
            yield http


async def page_and_api(
    http: httpx.AsyncClient, path: str, page_params: dict[str, str], api_params: dict[str, str]
) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
    page = await http.get(path, params=page_params, headers=BEARER)
    api = await http.get("/api/report", params=api_params, headers=BEARER)
    assert page.status_code == 200, page.text
    assert api.status_code == 200, api.text
    shown_rows = figures(page.text)
    if "scores" in shown_rows:
        # The score distribution of the page's selection, as the API answers it.
        scores = await http.get("/api/scores", params=api_params, headers=BEARER)
        assert shown_rows.pop("scores") == shown_scores(scores.json())
    return shown_rows, api.json()


async def test_trend_page_shows_the_report_numbers(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        shown_rows, api = await page_and_api(
            http, "/", {"portal": portal}, {"by": "period", "period": "month", "portal": portal}
        )
        _, whole = await page_and_api(
            http, "/", {"portal": portal}, {"by": "period", "period": "range", "portal": portal}
        )
        weekly, weekly_api = await page_and_api(
            http,
            "/",
            {"portal": portal, "period": "week", "segment": "12"},
            {"by": "period", "period": "week", "segment": "12", "portal": portal},
        )
    assert [row["period"] for row in api] == ["2024-03", "2024-04", "2024-05", "2024-06"]
    for row in api:
        assert shown_rows[row["period"]] == shown(row)
    assert shown_rows["summary"] == shown(whole[0])
    # Equipment answers only (the lasers), with the note of the cosmetics answers left out.
    assert shown_rows["summary"]["answers"] == "3"
    assert shown_rows["summary"]["note"] == cosmetics_left_out_note(5)
    assert len(weekly_api) == 9
    for row in weekly_api:
        assert weekly[row["period"]] == shown(row)
    assert weekly["summary"]["nps"] == "-33.3"


async def test_the_summary_is_compared_with_the_previous_period(pg_dsn: str, portal: str) -> None:
    may = {"portal": portal, "from": "2024-05-01", "to": "2024-05-31"}
    april = {"portal": portal, "from": "2024-03-31", "to": "2024-04-30"}
    async with client(pg_dsn) as http:
        shown_rows, [now] = await page_and_api(http, "/", may, {"by": "period", **may})
        _, [before] = await page_and_api(http, "/", april, {"by": "period", **april})
        preset = await http.get("/", params={"portal": portal, "dates": "7d"}, headers=BEARER)
    assert shown_rows["summary"] == shown(now)
    assert shown_rows["change"] == {
        "nps": "—" if None in (now["nps"], before["nps"]) else f"{now['nps'] - before['nps']:+.1f}",
        "previous_nps": "—" if before["nps"] is None else f"{before['nps']:.1f}",
        "answers": f"{now['answers'] - before['answers']:+d}",
        "previous_answers": str(before["answers"]),
    }
    assert preset.status_code == 200
    assert '<option value="7d" selected>last 7 days</option>' in preset.text
    assert figures(preset.text)["change"]["previous_answers"] == "0"


async def test_products_page_shows_the_report_numbers(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        shown_rows, api = await page_and_api(
            http, "/products", {"portal": portal}, {"by": "product", "portal": portal}
        )
        lasers, lasers_api = await page_and_api(
            http,
            "/products",
            {"portal": portal, "segment": "laser a"},
            {"by": "product", "portal": portal, "segment": "laser a"},
        )
        page = await http.get("/products", params={"portal": portal}, headers=BEARER)
    assert [row["sku"] for row in api] == ["CREAM", "LASER", "SERUM"]
    assert {sku: shown_rows[sku] for sku in ("CREAM", "LASER", "SERUM")} == {
        row["sku"]: shown(row) for row in api
    }
    assert shown_rows["LASER"]["nps"] == "-33.3"
    assert lasers == {"LASER": shown(lasers_api[0])}
    assert "Laser A" in page.text
    assert "equipment" in page.text
    assert page.text.count('class="spark"') == 3


async def test_managers_page_shows_the_report_numbers(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        shown_rows, api = await page_and_api(
            http, "/managers", {"portal": portal}, {"by": "manager", "portal": portal}
        )
        cosmetics, cosmetics_api = await page_and_api(
            http,
            "/managers",
            {"portal": portal, "segment": "10", "from": "2024-04-01"},
            {"by": "manager", "portal": portal, "segment": "10", "from": "2024-04-01"},
        )
    assert [row["manager_id"] for row in api] == [5, 7, None]
    assert shown_rows == {
        str(row["manager_id"]) if row["manager_id"] else "none": shown(row) for row in api
    }
    assert cosmetics == {"7": shown(cosmetics_api[0])}
    assert (cosmetics["7"]["nps"], cosmetics["7"]["answers"]) == ("—", "0")
    assert cosmetics["7"]["note"] == cosmetics_left_out_note(3)


async def test_attention_page_lists_detractors_and_service_requests(
    pg_dsn: str, portal: str
) -> None:
    async with client(pg_dsn) as http:
        page = await http.get("/attention", params={"portal": portal}, headers=BEARER)
        summary = await http.get(
            "/api/report",
            params={"by": "period", "period": "range", "portal": portal},
            headers=BEARER,
        )
        serum = await http.get(
            "/attention", params={"portal": portal, "product": "SERUM"}, headers=BEARER
        )
        may = await http.get(
            "/attention",
            params={"portal": portal, "from": "2024-05-01", "to": "2024-05-31", "manager": "7"},
            headers=BEARER,
        )
    assert page.status_code == 200
    rows = figures(page.text)
    expected = [
        f"{portal}:12:LASER",
        f"{portal}:11:LASER",
        f"{portal}:2:SERUM",
        f"{portal}:10:LASER",
    ]
    assert [key for key in rows if key != "summary"] == expected
    assert rows["summary"] == shown(summary.json()[0])
    assert rows[f"{portal}:2:SERUM"]["comment"] == SCRIPT
    assert rows[f"{portal}:12:LASER"] == {"score": "—", "contact_id": "603", "comment": "fine"}
    assert rows[f"{portal}:11:LASER"]["comment"] == "broken again"
    assert SCRIPT not in page.text
    assert f'href="{ORIGIN}/crm/type/1038/details/12/"' in page.text
    assert f'href="{ORIGIN}/crm/contact/details/602/"' in page.text
    assert "w3bh00k" not in page.text
    assert "/rest/" not in page.text
    assert [k for k in figures(serum.text) if k != "summary"] == [f"{portal}:2:SERUM"]
    shown_may = figures(may.text)
    assert [k for k in shown_may if k not in ("summary", "change")] == [f"{portal}:12:LASER"]
    assert shown_may["change"]["previous_answers"].isdigit()


async def test_ops_page_counts_conflicts_and_dead_letters(
    pg_dsn: str, pool: asyncpg.Pool, portal: str, amqp_url: str, channel: AbstractChannel
) -> None:
    action = f"act-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        for n, (current, proposed) in enumerate([("7 (2019)", 9), (SCRIPT, 3)]):
            await conn.execute(
                """INSERT INTO crm_conflicts (portal, contact_id, field, reason, current_value,
                       proposed_value, answer_id, action_id)
                   VALUES ($1, $2, 'UF_CRM_NPS_LASER_A', 'legacy value', $3::jsonb, $4::jsonb,
                       $5, $6)""",
                portal,
                700 + n,
                json.dumps(current),
                json.dumps(proposed),
                f"{portal}:{20 + n}:LASER",
                f"{action}-{n}",
            )
    message = aio_pika.Message(b"{}", message_id=f"dead-{uuid.uuid4().hex[:8]}")
    await channel.default_exchange.publish(message, routing_key="scoring.submissions.dlq")
    try:
        async with client(pg_dsn, amqp_url) as http:
            page = await http.get("/ops", params={"portal": portal}, headers=BEARER)
        async with client(pg_dsn, "amqp://guest:guest@127.0.0.1:1/") as http:
            down = await http.get("/ops", params={"portal": portal}, headers=BEARER)
    finally:
        await (await channel.get_queue("scoring.submissions.dlq", ensure=False)).purge()
    assert page.status_code == 200
    rows = figures(page.text)
    assert rows["conflicts"] == {"total": "2"}
    assert rows["scoring.submissions"] == {"size": "1"}
    assert rows["crm_sync.actions"] == {"size": "0"}
    assert "7 (2019)" in page.text
    assert SCRIPT not in page.text
    assert f'href="{ORIGIN}/crm/contact/details/701/"' in page.text
    assert down.status_code == 200
    down_rows = figures(down.text)
    assert down_rows["scoring.submissions"] == {"size": "unknown"}
    assert down_rows["conflicts"] == {"total": "2"}
    assert "RabbitMQ did not answer" in down.text


async def test_pages_show_the_portals_time_and_field_titles(
    pg_dsn: str, pool: asyncpg.Pool, portal: str
) -> None:
    other = f"m-dash-tz-{uuid.uuid4().hex[:10]}"
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO crm_conflicts (portal, contact_id, field, reason, current_value,
                   proposed_value, answer_id, action_id, created_at)
               VALUES ($1, 800, 'UF_CRM_NPS_CRYO_B', 'legacy value', '"8"', '3', $2, $3,
                   '2024-06-01T12:00:00Z')""",
            other,
            f"{other}:30:CRYO",
            f"act-{uuid.uuid4().hex[:8]}",
        )
    titles = {"UF_CRM_NPS_CRYO_B": "Cryo B: NPS score"}
    async with client(pg_dsn, timezone="Europe/Moscow", field_titles=titles) as http:
        ops = await http.get("/ops", params={"portal": other}, headers=BEARER)
        attention = await http.get("/attention", params={"portal": portal}, headers=BEARER)
    assert ops.status_code == attention.status_code == 200
    assert "<td>2024-06-01 15:00 MSK</td>" in ops.text
    assert '<td title="UF_CRM_NPS_CRYO_B">Cryo B: NPS score' in ops.text
    assert ops.text.index("<h2>Dead letters</h2>") < ops.text.index("<h2>Conflicts</h2>")
    assert " MSK</td>" in attention.text
    assert " UTC</td>" not in attention.text


async def test_managers_are_named_by_the_portals_users(
    pg_dsn: str, pool: asyncpg.Pool, portal: str
) -> None:
    await pool.execute(
        "INSERT INTO ingest_users (portal, user_id, name, refreshed_at) VALUES ($1, 7, $2, now())"
        " ON CONFLICT DO NOTHING",
        portal,
        f"Elena {SCRIPT}",
    )
    async with client(pg_dsn) as http:
        managers = await http.get("/managers", params={"portal": portal}, headers=BEARER)
        attention = await http.get("/attention", params={"portal": portal}, headers=BEARER)
        api = await http.get(
            "/api/report", params={"by": "manager", "portal": portal}, headers=BEARER
        )
    named = f"Elena {SCRIPT}".replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#x27;")
    assert f'<a href="/?manager=7&amp;portal={portal}">{named}</a>' in managers.text
    assert '<option value="7">' + named + "</option>" in managers.text
    assert "user 5" in managers.text  # no name read for manager 5
    assert f"<td>{named}</td>" in attention.text
    assert SCRIPT not in managers.text + attention.text
    assert [(r["manager_id"], r["manager_name"]) for r in api.json()] == [
        (5, None),
        (7, f"Elena {SCRIPT}"),
        (None, None),
    ]


async def test_conflicts_without_crm_syncs_table_are_none(pool: asyncpg.Pool) -> None:
    schema = f"empty_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            assert await conflicts(conn, None) == (None, [])
        finally:
            await conn.execute("RESET search_path")
            await conn.execute(f'DROP SCHEMA "{schema}"')


@pytest.mark.parametrize("path", ["/", "/products", "/managers", "/attention", "/ops"])
async def test_pages_need_the_token(pg_dsn: str, portal: str, path: str) -> None:
    basic = httpx.BasicAuth("marketing", TOKEN)
    async with client(pg_dsn) as http:
        missing = await http.get(path, params={"portal": portal})
        wrong = await http.get(
            path, params={"portal": portal}, headers={"Authorization": "Bearer x"}
        )
        wrong_once = await http.get(path, params={"portal": portal, "token": "nope"})
        bearer = await http.get(path, params={"portal": portal}, headers=BEARER)
        signed_in = await http.get(path, params={"portal": portal}, auth=basic)
    for refused in (missing, wrong, wrong_once):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Basic realm="b24-nps reports"')
        assert "needs the reports token" in refused.text
        assert portal not in refused.text
    for allowed in (bearer, signed_in):
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in allowed.headers["content-security-policy"]
        assert allowed.headers["referrer-policy"] == "no-referrer"
        assert allowed.headers["cache-control"] == "no-store"


async def test_token_in_the_url_once_sets_a_cookie(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        entry = await http.get(
            "/products", params={"token": TOKEN, "portal": portal, "period": "week"}
        )
        assert entry.status_code == 303
        assert entry.headers["location"] == f"/products?portal={portal}&period=week"
        set_cookie = entry.headers["set-cookie"]
        assert set_cookie.startswith(f"{COOKIE}=")
        assert TOKEN not in set_cookie
        for flag in ("HttpOnly", "Path=/", "SameSite=lax", "Max-Age="):
            assert flag in set_cookie
        assert "Secure" not in set_cookie
        followed = await http.get(entry.headers["location"])
        api = await http.get("/api/report", params={"by": "product", "portal": portal})
        http.cookies.clear()
        forgotten = await http.get(entry.headers["location"])
    assert followed.status_code == 200
    assert set(figures(followed.text)) == {"CREAM", "LASER", "SERUM", "scores"}
    assert api.status_code == 200
    assert forgotten.status_code == 401


async def test_api_needs_the_token_too(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        missing = await http.get("/api/report", params={"portal": portal})
        signed_in = await http.get(
            "/api/report", params={"portal": portal}, auth=httpx.BasicAuth("ops", TOKEN)
        )
        health = await http.get("/healthz")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert signed_in.status_code == 200
    assert health.status_code == 200


async def test_the_style_sheet_is_served_without_the_token(pg_dsn: str) -> None:
    async with client(pg_dsn) as http:
        page = await http.get("/ops", headers=BEARER)
        sign_in = await http.get("/ops")
        linked = re.search(r'<link rel="stylesheet" href="([^"]+)">', page.text)
        assert linked is not None
        css = await http.get(linked.group(1))
        missing = await http.get("/static/nothing.css")
        outside = await http.get("/static/%2E%2E/app.py")
    assert linked.group(1) in sign_in.text
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "svg.chart" in css.text
    assert missing.status_code == 404
    assert outside.status_code == 404


async def test_bad_filters_are_named_on_the_page(pg_dsn: str) -> None:
    async with client(pg_dsn) as http:
        response = await http.get(
            "/managers",
            params={"manager": "abc", "from": "2024-06-01", "to": "2024-05-01"},
            headers=BEARER,
        )
    assert response.status_code == 422
    assert "These filters cannot be used" in response.text
    assert (
        "manager: expected a user id (a whole number from 1), got &#x27;abc&#x27;" in response.text
    )
    assert "from (2024-06-01) is after to (2024-05-01)" in response.text
    assert '<form class="filters"' in response.text


@pytest.fixture(scope="module")
async def check_portal(pool: asyncpg.Pool) -> str:
    member = f"m-dash-check-{uuid.uuid4().hex[:10]}"
    await score_the_check(pool, member)
    return member


@pytest.mark.parametrize(
    ("path", "row"),
    [("/", "summary"), ("/", "2024-05"), ("/attention", "summary"), ("/managers", "5")],
    ids=["trend-tiles", "trend", "attention-tiles", "managers"],
)
async def test_the_cosmetics_check_shows_no_aggregate_nps(
    pg_dsn: str, check_portal: str, path: str, row: str
) -> None:
    async with client(pg_dsn) as http:
        page = await http.get(path, params={"portal": check_portal}, headers=BEARER)
    assert page.status_code == 200, page.text
    assert figures(page.text)[row] == {
        "nps": "—",
        "margin": "—",
        "promoters": "0",
        "passives": "0",
        "detractors": "0",
        "answers": "0",
        "avg_score": "—",
        "note": LEFT_OUT,
    }
    assert "60.0" not in page.text


async def test_the_cosmetics_check_per_product_on_the_products_page(
    pg_dsn: str, check_portal: str
) -> None:
    async with client(pg_dsn) as http:
        page = await http.get("/products", params={"portal": check_portal}, headers=BEARER)
    shown_rows = figures(page.text)
    assert {sku: shown_rows[sku]["nps"] for sku in PER_PRODUCT} == {
        sku: f"{nps:.1f}" for sku, nps in PER_PRODUCT.items()
    }


async def test_deal_surveys_show_in_the_trend_managers_and_detractors(
    pg_dsn: str, pool: asyncpg.Pool
) -> None:
    member = f"m-dash-deals-{uuid.uuid4().hex[:10]}"
    for deal_id, manager, score in [(5, 31, 2), (6, 32, 10)]:
        at = "2024-05-10T10:00:00+03:00"
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("DEAL-SALES", score),
                item_id=deal_id,
                member_id=member,
                responsible_id=manager,
                kind="deal",
                entity_type_id=2,
                category_id=20,
                segment="After the sale",
                submitted_at=at,
                updated_at=at,
            ),
        )
    async with client(pg_dsn) as http:
        params = {"portal": member, "segment": "After the sale"}
        trend = await http.get("/", params=params, headers=BEARER)
        managers = await http.get("/managers", params=params, headers=BEARER)
        attention = await http.get("/attention", params=params, headers=BEARER)
    assert figures(trend.text)["2024-05"]["nps"] == "0.0"
    assert {"31", "32"} <= set(figures(managers.text))
    assert [key for key in figures(attention.text) if key != "summary"] == [
        f"{member}:D_5:DEAL-SALES"
    ]
    assert f'href="{ORIGIN}/crm/deal/details/5/"' in attention.text


async def test_ops_page_shows_crm_syncs_lanes(
    pg_dsn: str, pool: asyncpg.Pool, amqp_url: str, channel: AbstractChannel
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM rate_lane_usage")
        await conn.executemany(
            """INSERT INTO rate_lane_usage (portal, lane, minute, requests, waited_s)
               VALUES ('p', $1, date_trunc('minute', now()) - make_interval(mins => $2), $3, $4)""",
            [("urgent", 0, 3, 0.3), ("bulk", 1, 12, 6.0), ("bulk", 20, 500, 100.0)],
        )
    message = aio_pika.Message(b"{}", message_id=f"urgent-{uuid.uuid4().hex[:8]}")
    await channel.default_exchange.publish(message, routing_key="crm_sync.urgent")
    try:
        async with client(pg_dsn, amqp_url) as http:
            page = await http.get("/ops", headers=BEARER)
        async with client(pg_dsn, "amqp://guest:guest@127.0.0.1:1/") as http:
            down = await http.get("/ops", headers=BEARER)
    finally:
        await (await channel.get_queue("crm_sync.urgent", ensure=False)).purge()
    rows = figures(page.text)
    # the last 15 minutes only: the bulk requests of 20 minutes ago are left out
    assert rows["lane-urgent"] == {
        "queued": "1",
        "requests": "3",
        "share": "20 %",
        "wait": "0.10 s",
    }
    assert rows["lane-bulk"] == {"queued": "0", "requests": "12", "share": "80 %", "wait": "0.50 s"}
    assert figures(down.text)["lane-urgent"]["queued"] == "unknown"
