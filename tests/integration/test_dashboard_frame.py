"""The dashboard inside a Bitrix24 portal (application mode) against two sandbox portals with
the application installed through services/app (ASGI in process, both ways) and the real
PostgreSQL: the frame entry checks the portal and the user's token, its session reads that
portal's answers only (pages, CSV, API; `?portal=` of another refused), and the settings page
saves the portal's configuration (validated, versioned, CSRF-checked, administrators only)."""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.app.installer import Installer
from services.app.lifecycle import wanted_bindings
from services.app.web import create_app as create_app_service
from services.reports.app import create_app as create_reports
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.portals import PortalSpec, Sandbox
from services.scoring.handlers import score_submission
from shared import portal_store
from shared.bitrix24 import Bitrix24Client
from shared.bitrix24.tokens import AppCredentials
from shared.outbox import Outbox
from tests.support import T0, FakeClock
from tests.support.app import (
    APP,
    INGEST,
    ROOT,
    Forward,
    ToApp,
    app_registration,
    book_client,
    sandbox_for,
    settled,
    token_book,
    two_names,
)
from tests.support.scoring import make_submission

REPORTS = "http://reports.example.test"
PUBLIC = "https://reports.example.test"
"""`REPORTS_PUBLIC_URL`: the portals reach the app through a TLS proxy."""
CLIENT_ID = "local.nps.1"
SECRET = "app-secret-frame"
TOKEN = "reports-token-frame"
MANAGER = 31
"""A user of both portals who is not an administrator."""
TEMPLATE = Path("config/portal.example.yaml").read_text(encoding="utf-8")
REGISTRATION = app_registration(CLIENT_ID, SECRET, handler_url=f"{REPORTS}/frame")


@dataclass
class World:
    sandbox: Sandbox
    portals: httpx.AsyncClient
    reports: httpx.AsyncClient
    alpha: str
    beta: str

    def member_id(self, name: str) -> str:
        return self.sandbox.named[name].portal.member_id

    async def frame_form(self, name: str, user_id: int | None = None) -> dict[str, Any]:
        """What the portal POSTs into the application's frame when `user_id` opens it."""
        params: dict[str, Any] = {"placement": "DEFAULT"}
        if user_id is not None:
            params["user_id"] = user_id
        answer = await self.portals.get(f"/p/{name}/sandbox/frame", params=params)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def post_frame(self, form: dict[str, Any]) -> httpx.Response:
        # The application's page (its registered handler URL) or the tab (bound to PUBLIC).
        assert form["url"] in (f"{REPORTS}/frame", f"{PUBLIC}/frame")
        return await self.reports.post("/frame", params=form["query"], data=form["body"])

    async def open(self, name: str, user_id: int | None = None) -> str:
        """The session of `user_id` (the portal's administrator by default) opening the app."""
        entry = await self.post_frame(await self.frame_form(name, user_id))
        assert entry.status_code == 303, entry.text
        location = entry.headers["location"]
        assert location.startswith("/?s=")
        return parse_qs(urlsplit(location).query)["s"][0]


@pytest.fixture
async def world(pool: asyncpg.Pool, pg_dsn: str) -> AsyncIterator[World]:
    clock = FakeClock(T0)
    sandbox = sandbox_for(REGISTRATION, clock)
    names = two_names()
    for name in names:
        host = sandbox.add(PortalSpec(name=name, limits=Limits.off()))
        host.portal.crm.add_user(MANAGER, "Anna", "Petrova", position="Sales manager")
    to_sandbox = Forward()
    sandbox_net = httpx.ASGITransport(app=to_sandbox)
    book = token_book(pool, sandbox_net, clock, CLIENT_ID, SECRET)
    credentials = AppCredentials(ROOT, CLIENT_ID, SecretStr(SECRET))

    def client_for(member_id: str) -> Bitrix24Client:
        return book_client(book, member_id, sandbox_net)

    bindings = wanted_bindings(INGEST, f"{APP}/app/events")
    installer = Installer(book, CLIENT_ID, client_for, bindings, clock=clock)
    app_net = httpx.ASGITransport(app=create_app_service(installer, f"{ROOT}/sandbox/bx24.js"))
    to_sandbox.target = create_sandbox_app(sandbox, event_transport=ToApp(app_net))
    reports = create_reports(
        pg_dsn,
        TOKEN,
        frame_secret="frame-secret-for-tests",
        template_yaml=TEMPLATE,
        portal_transport=sandbox_net,
        public_url=PUBLIC,
        app_credentials=credentials,
    )
    async with (
        reports.router.lifespan_context(reports),
        httpx.AsyncClient(transport=sandbox_net, base_url=ROOT) as portals,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=reports), base_url=REPORTS
        ) as reports_http,
    ):
        world = World(sandbox, portals, reports_http, *names)
        for name in names:
            answer = await portals.post(f"/p/{name}/sandbox/install", json={})
            assert answer.status_code == 200, answer.text
            assert answer.json()["installed"] is True
            await settled(sandbox.named[name].portal, "ONAPPINSTALL")
        # Answers of both portals: serums on alpha, a cream on beta.
        answers = [
            (names[0], "COS-SERUM", 10, "alpha was great"),
            (names[0], "COS-SERUM", 3, "alpha was slow"),
            (names[1], "COS-CREAM", 8, "beta secret comment"),
            (names[0], "COS-SERUM", 7, "alpha contact 502 wrote"),
        ]
        for item, (name, sku, score, comment) in enumerate(answers, 1):
            submission = make_submission(
                (sku, score),
                item_id=item,
                member_id=world.member_id(name),
                submitted_at="2024-05-02T10:00:00+03:00",
                comment=comment,
                contact_id=502 if "502" in comment else 501,
            )
            await score_submission(pool, Outbox(), submission)
        yield world
    await book.oauth.aclose()


def text_of(page: httpx.Response) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


async def test_the_frame_shows_its_portal_only(world: World) -> None:
    session = await world.open(world.alpha)
    products = await world.reports.get("/products", params={"s": session})
    assert products.status_code == 200, products.text
    assert "COS-SERUM" in products.text
    assert "COS-CREAM" not in products.text
    # Framed by its own portal only; every link keeps the session, no link names a portal.
    policy = products.headers["content-security-policy"]
    assert f"frame-ancestors {ROOT}" in policy
    links = re.findall(r'href="([^"]+)"', products.text)
    inner = [link for link in links if link.startswith("/") and not link.startswith("/static")]
    assert inner
    assert all("s=" in link for link in inner), inner
    assert world.member_id(world.beta) not in products.text
    assert 'name="s"' in products.text

    ratings = await world.reports.get("/ratings", params={"s": session})
    assert "alpha was slow" in text_of(ratings)
    assert "beta secret comment" not in text_of(ratings)
    csv = await world.reports.get("/ratings.csv", params={"s": session})
    assert csv.status_code == 200
    assert "alpha was great" in csv.text
    assert "beta secret comment" not in csv.text
    report = await world.reports.get("/api/report", params={"by": "product", "s": session})
    assert report.status_code == 200, report.text
    assert {row["sku"]: row["answers"] for row in report.json()} == {"COS-SERUM": 3}

    # A filter that cannot be read: its problem named, the filter form of this portal only.
    bad = await world.reports.get("/products", params={"s": session, "from": "yesterday"})
    assert bad.status_code == 422
    assert "from: expected a date" in text_of(bad)
    assert "COS-SERUM" in bad.text
    assert "COS-CREAM" not in bad.text
    assert 'name="s"' in bad.text

    ops = await world.reports.get("/ops", params={"s": session})
    assert ops.status_code == 200
    assert "belong to the whole deployment" in text_of(ops)
    assert "Dead letters" not in ops.text

    # The other portal's session sees the other portal's answers.
    beta = await world.open(world.beta)
    other = await world.reports.get("/ratings", params={"s": beta})
    assert "beta secret comment" in text_of(other)
    assert "alpha was slow" not in text_of(other)


async def test_another_portal_named_from_a_session_is_refused(world: World) -> None:
    session = await world.open(world.alpha)
    beta = world.member_id(world.beta)
    for path in ("/", "/products", "/ratings", "/ops", "/ratings.csv", "/asked.csv"):
        answer = await world.reports.get(path, params={"s": session, "portal": beta})
        assert answer.status_code == 403, (path, answer.status_code)
        assert "beta secret comment" not in answer.text
        assert "portal: this session reads its own portal only" in text_of(answer)
    for path in ("/api/report", "/api/scores"):
        answer = await world.reports.get(path, params={"s": session, "portal": beta})
        assert answer.status_code == 403, answer.text
    # Naming its own portal is no different from naming none.
    own = await world.reports.get(
        "/products", params={"s": session, "portal": world.member_id(world.alpha)}
    )
    assert own.status_code == 200
    assert "COS-SERUM" in own.text


async def test_forged_entries_and_sessions_are_refused(world: World) -> None:
    # An unknown member_id.
    form = await world.frame_form(world.alpha)
    form["body"] = {**form["body"], "member_id": "forged-member"}
    refused = await world.post_frame(form)
    assert refused.status_code == 403
    assert "member_id: not a portal this application is installed on" in text_of(refused)

    # A token of portal beta presented as a user of alpha.
    beta_form = await world.frame_form(world.beta)
    beta_form["body"] = {**beta_form["body"], "member_id": world.member_id(world.alpha)}
    refused = await world.post_frame(beta_form)
    assert refused.status_code == 403
    assert "AUTH_ID: a token of another portal than member_id" in text_of(refused)

    # A made-up token, and no token.
    form = await world.frame_form(world.alpha)
    made_up = {**form["body"], "AUTH_ID": "not-a-token"}
    assert (await world.post_frame({**form, "body": made_up})).status_code == 403
    missing = {k: v for k, v in form["body"].items() if k != "AUTH_ID"}
    refused = await world.post_frame({**form, "body": missing})
    assert refused.status_code == 400
    assert "AUTH_ID: missing" in text_of(refused)

    # The portal failing to answer is no refusal of the user: 502, and the next try works.
    faults = {"error_count": 1, "methods": ["profile"]}
    assert (await world.portals.put(f"/p/{world.alpha}/sandbox/faults", json=faults)).is_success
    failed = await world.post_frame(await world.frame_form(world.alpha))
    assert failed.status_code == 502
    assert "the portal could not answer now" in text_of(failed)
    assert (await world.post_frame(await world.frame_form(world.alpha))).status_code == 303

    # A session altered or made up: nothing shown.
    session = await world.open(world.alpha)
    for forged in (session[:-2] + "xx", "made-up", ""):
        page = await world.reports.get("/products", params={"s": forged})
        assert page.status_code == 401
        assert "COS-SERUM" not in page.text
        assert (await world.reports.get("/api/report", params={"s": forged})).status_code == 401

    # The reports token keeps working as before, and no token is no entry.
    plain = await world.reports.get("/products", headers={"Authorization": f"Bearer {TOKEN}"})
    assert plain.status_code == 200
    assert (await world.reports.get("/products")).status_code == 401


async def test_an_uninstalled_portal_loses_its_sessions(world: World) -> None:
    session = await world.open(world.alpha)
    answer = await world.portals.post(f"/p/{world.alpha}/sandbox/uninstall")
    assert answer.status_code == 200, answer.text
    await settled(world.sandbox.named[world.alpha].portal, "ONAPPUNINSTALL")
    async with asyncio.timeout(5):
        while (await world.reports.get("/", params={"s": session})).status_code != 403:
            await asyncio.sleep(0.02)
    page = await world.reports.get("/ratings", params={"s": session})
    assert page.status_code == 403
    assert "alpha was slow" not in page.text


async def stored_config(pool: asyncpg.Pool, member: str) -> portal_store.StoredConfig | None:
    async with pool.acquire() as conn:
        return await portal_store.load(conn, member)


def _field(page: httpx.Response, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page.text)
    assert found is not None, name
    return unescape(found.group(1))


def _editor(page: httpx.Response) -> str:
    found = re.search(r"<textarea[^>]*>(.*)</textarea>", page.text, re.S)
    assert found is not None
    return unescape(found.group(1))


async def _save(world: World, page: httpx.Response, text: str, **override: str) -> httpx.Response:
    fields = {
        "s": _field(page, "s"),
        "csrf": _field(page, "csrf"),
        "version": _field(page, "version"),
        "yaml": text,
        **override,
    }
    return await world.reports.post("/settings", data=fields)


async def test_the_settings_page_saves_a_valid_configuration(
    world: World, pool: asyncpg.Pool
) -> None:
    member = world.member_id(world.alpha)
    session = await world.open(world.alpha)
    page = await world.reports.get("/settings", params={"s": session})
    assert page.status_code == 200, page.text
    assert _editor(page) == TEMPLATE
    assert _field(page, "version") == ""
    assert "the deployment's portal YAML (its template)" in text_of(page)
    assert f"frame-ancestors {ROOT}" in page.headers["content-security-policy"]

    moscow = TEMPLATE.replace("timezone: UTC ", "timezone: Europe/Moscow ", 1)
    assert moscow != TEMPLATE
    saved = await _save(world, page, moscow)
    assert saved.status_code == 200, saved.text
    assert "Saved as version 1" in text_of(saved)
    stored = await stored_config(pool, member)
    assert stored is not None
    assert (stored.version, stored.config.portal.timezone) == (1, "Europe/Moscow")
    assert stored.updated_by is not None
    assert stored.updated_by.startswith("user ")
    assert await stored_config(pool, world.member_id(world.beta)) is None

    # The stored configuration is what the next page shows, and the dashboard's times use it.
    again = await world.reports.get("/settings", params={"s": session})
    assert (_editor(again), _field(again, "version")) == (moscow, "1")
    ratings = await world.reports.get("/ratings", params={"s": session})
    assert "MSK" in ratings.text

    # An invalid one: the field named, nothing stored, the text kept in the editor.
    invalid = moscow.replace("timezone: Europe/Moscow", "timezone: Mars/Olympus", 1)
    refused = await _save(world, again, invalid)
    assert refused.status_code == 422
    assert "portal.timezone" in text_of(refused)
    assert _editor(refused) == invalid
    stored = await stored_config(pool, member)
    assert stored is not None
    assert stored.version == 1
    broken = await _save(world, again, "portal: [unclosed")
    assert broken.status_code == 422
    assert "not valid YAML" in text_of(broken)

    # A concurrent edit: the second save from the same version is refused, not overwritten.
    first = await _save(world, again, moscow.replace("plan: standard", "plan: enterprise", 1))
    assert first.status_code == 200
    late = await _save(world, again, moscow)
    assert late.status_code == 409
    assert "changed meanwhile" in text_of(late)
    stored = await stored_config(pool, member)
    assert stored is not None
    assert (stored.version, stored.config.portal.plan) == (2, "enterprise")


async def test_a_stored_configuration_that_no_longer_validates_is_shown_to_be_fixed(
    world: World, pool: asyncpg.Pool
) -> None:
    """Saved before a rule became stricter: the dashboard still opens (on the template), the
    settings page shows the stored text with its problems, and a fixed one saves."""
    member = world.member_id(world.alpha)
    stale = TEMPLATE.replace("timezone: UTC ", "timezone: Mars/Olympus ", 1)
    assert stale != TEMPLATE
    await pool.execute(
        "INSERT INTO portal_configs (portal, yaml, updated_by) VALUES ($1, $2, 'an old release')",
        member,
        stale,
    )
    session = await world.open(world.alpha)
    ratings = await world.reports.get("/ratings", params={"s": session})
    assert ratings.status_code == 200, ratings.text

    page = await world.reports.get("/settings", params={"s": session})
    assert page.status_code == 200, page.text
    assert (_editor(page), _field(page, "version")) == (stale, "1")
    assert "no longer validates" in text_of(page)
    assert "portal.timezone" in text_of(page)
    fixed = await _save(world, page, TEMPLATE)
    assert fixed.status_code == 200, fixed.text
    assert "Saved as version 2" in text_of(fixed)


async def test_the_settings_are_saved_by_administrators_with_the_csrf_token_only(
    world: World, pool: asyncpg.Pool
) -> None:
    member = world.member_id(world.alpha)
    manager = await world.open(world.alpha, MANAGER)
    page = await world.reports.get("/settings", params={"s": manager})
    assert page.status_code == 200
    assert "Only the portal's administrators may change it" in text_of(page)
    assert "readonly" in page.text
    refused = await _save(world, page, TEMPLATE)
    assert refused.status_code == 403
    assert "only the portal's administrators" in text_of(refused)

    admin = await world.open(world.alpha)
    page = await world.reports.get("/settings", params={"s": admin})
    assert (await _save(world, page, TEMPLATE, csrf="")).status_code == 403
    # Another session's CSRF token does not fit this one.
    other = await world.reports.get("/settings", params={"s": await world.open(world.alpha)})
    wrong = await _save(world, page, TEMPLATE, csrf=_field(other, "csrf"))
    assert wrong.status_code == 403
    assert "csrf" in text_of(wrong)
    assert await stored_config(pool, member) is None


async def _contact_tabs(world: World, name: str) -> list[dict[str, Any]]:
    state = (await world.portals.get(f"/p/{name}/sandbox/app")).json()
    return [p for p in state["placements"] if p["placement"] == "CRM_CONTACT_DETAIL_TAB"]


async def test_the_contact_card_tab_shows_that_contact_s_answers(world: World) -> None:
    # A user who is no administrator binds nothing; an administrator's entry binds the tab once.
    await world.open(world.alpha, MANAGER)
    assert await _contact_tabs(world, world.alpha) == []
    await world.open(world.alpha)
    await world.open(world.alpha)
    tabs = await _contact_tabs(world, world.alpha)
    assert [(t["handler"], t["title"]) for t in tabs] == [(f"{PUBLIC}/frame", "NPS")]
    assert await _contact_tabs(world, world.beta) == []

    # The tab of contact 502's card, opened by a user who is no administrator.
    params = {"placement": "CRM_CONTACT_DETAIL_TAB", "user_id": str(MANAGER), "ID": "502"}
    answer = await world.portals.get(f"/p/{world.alpha}/sandbox/frame", params=params)
    assert answer.status_code == 200, answer.text
    form = answer.json()
    entry = await world.post_frame(form)
    assert entry.status_code == 303, entry.text
    location = entry.headers["location"]
    assert location.startswith("/ratings?contact=502&s=")
    page = await world.reports.get(location)
    assert page.status_code == 200
    assert "alpha contact 502 wrote" in text_of(page)
    assert "alpha was slow" not in text_of(page)
    csv = await world.reports.get(location.replace("/ratings?", "/ratings.csv?"))
    assert "alpha contact 502 wrote" in csv.text
    assert "alpha was slow" not in csv.text

    broken = {**form["body"], "PLACEMENT_OPTIONS": "{}"}
    refused = await world.post_frame({**form, "body": broken})
    assert refused.status_code == 400
    assert "PLACEMENT_OPTIONS: expected the contact card's ID" in text_of(refused)


async def _request(
    pool: asyncpg.Pool, member_id: str, kind: str, deal: int, nps_deal: int | None
) -> uuid.UUID:
    """A request of dispatch's register asked for sale deal `deal` of the portal, answered."""
    request_id = uuid.uuid4()
    at = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    await pool.execute(
        """INSERT INTO dispatch_requests (request_id, portal, source, ref, survey, kind,
               category_id, contact_id, sale_deal_id, nps_deal_id, lang, channel, state,
               created_at, sent_at, opened_at, answered_at, closed_at)
           VALUES ($1, $2, 'sale', $3, $4, $5, 10, 501, $6, $7, 'en', 'email', 'answered',
                   $8, $8, $8, $8, $8)""",
        request_id,
        member_id,
        str(deal),
        f"{kind} survey",
        kind,
        deal,
        nps_deal,
        at,
    )
    return request_id


async def _deal_tab(world: World, name: str, deal: int, user_id: int = MANAGER) -> str:
    """Where the tab of deal `deal`'s card on portal `name` leads (opened by `user_id`)."""
    params = {"placement": "CRM_DEAL_DETAIL_TAB", "user_id": str(user_id), "ID": str(deal)}
    answer = await world.portals.get(f"/p/{name}/sandbox/frame", params=params)
    assert answer.status_code == 200, answer.text
    entry = await world.post_frame(answer.json())
    assert entry.status_code == 303, entry.text
    location: str = entry.headers["location"]
    assert location.startswith(f"/ratings?deal={deal}&s=")
    return location


async def test_the_deal_card_tab_shows_that_deal_s_surveys_and_answers_of_its_portal(
    world: World, pool: asyncpg.Pool
) -> None:
    alpha, beta = world.member_id(world.alpha), world.member_id(world.beta)
    # Sale deal 55 of alpha asked twice: a deal survey answered on its NPS deal 77, a segment
    # survey answered on smart-process item 4 ("alpha contact 502 wrote"). Beta's NPS deal 88.
    for member_id, item, comment in ((alpha, 77, "alpha deal 77 said"), (beta, 88, "beta 88 said")):
        submission = make_submission(
            ("COS-SERUM", 9),
            item_id=item,
            member_id=member_id,
            entity_type_id=2,
            submitted_at="2024-05-02T10:00:00+03:00",
            comment=comment,
        )
        await score_submission(pool, Outbox(), submission)
    await _request(pool, alpha, "deal", 55, 77)
    segment = await _request(pool, alpha, "segment", 55, None)
    await pool.execute(
        "INSERT INTO crm_survey_items (request_id, item_id, version, portal) VALUES ($1, 4, 1, $2)",
        segment,
        alpha,
    )
    await _request(pool, beta, "deal", 88, 88)
    try:
        # An administrator's entry binds the deal card's tab with the contact card's.
        await world.open(world.alpha)
        await world.open(world.beta)
        state = (await world.portals.get(f"/p/{world.alpha}/sandbox/app")).json()
        assert {(p["placement"], p["handler"]) for p in state["placements"]} == {
            ("CRM_CONTACT_DETAIL_TAB", f"{PUBLIC}/frame"),
            ("CRM_DEAL_DETAIL_TAB", f"{PUBLIC}/frame"),
        }

        location = await _deal_tab(world, world.alpha, 55)
        page = await world.reports.get(location)
        assert page.status_code == 200
        text = text_of(page)
        assert "Surveys of deal 55" in text
        assert text.count("asked for this deal") == 2
        assert "deal survey" in text
        assert "segment survey" in text
        assert "alpha deal 77 said" in text
        assert "alpha contact 502 wrote" in text
        assert "alpha was slow" not in text
        assert "beta 88 said" not in text
        csv = await world.reports.get(location.replace("/ratings?", "/ratings.csv?"))
        assert "alpha deal 77 said" in csv.text
        assert "alpha contact 502 wrote" in csv.text
        assert "alpha was slow" not in csv.text

        # The NPS deal's own card: its answer, its request as the one whose NPS deal it is.
        nps_deal = text_of(await world.reports.get(await _deal_tab(world, world.alpha, 77)))
        assert "this deal is its NPS deal" in nps_deal
        assert "alpha deal 77 said" in nps_deal
        assert "alpha contact 502 wrote" not in nps_deal

        # Deal 88 is beta's: from alpha's card of a deal 88, nothing of beta shows.
        other = text_of(await world.reports.get(await _deal_tab(world, world.alpha, 88)))
        assert "beta 88 said" not in other
        assert "No survey was asked for this deal." in other
        assert "No answers for these filters." in other
        own = text_of(await world.reports.get(await _deal_tab(world, world.beta, 88)))
        assert "beta 88 said" in own
        assert "alpha deal 77 said" not in own

        refused = await world.reports.get(location + f"&portal={beta}")
        assert refused.status_code == 403
    finally:
        await pool.execute(
            "DELETE FROM crm_survey_items WHERE portal = ANY($1::text[])", [alpha, beta]
        )
        await pool.execute(
            "DELETE FROM dispatch_requests WHERE portal = ANY($1::text[])", [alpha, beta]
        )


async def test_a_form_too_large_is_refused_before_it_is_read_whole(world: World) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(64):
            pulled += 1
            yield b"x" * 16 * 1024  # 1 MiB in all, no Content-Length

    for path in ("/frame", "/settings"):
        pulled = 0
        answer = await world.reports.post(
            path, content=body(), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert answer.status_code == 413, answer.text
        assert "larger than 256 KB" in text_of(answer)
        assert pulled <= 18  # 256 KiB and one chunk more, not the whole megabyte


async def test_a_token_of_another_application_of_the_portal_is_refused(world: World) -> None:
    """`profile` answers any application's user token: the OAuth server's `app.info` names
    the application (the sandbox knows one: registering it anew as another application
    makes the tokens it names another application's)."""
    form = await world.frame_form(world.alpha)
    assert world.sandbox.server is not None
    registration = world.sandbox.server.registration
    assert registration is not None
    other = {**registration.model_dump(), "client_id": "local.other.app"}
    assert (await world.portals.put("/sandbox/oauth/app", json=other)).status_code == 200
    refused = await world.post_frame(form)
    assert refused.status_code == 403
    assert "AUTH_ID: a token of another application" in text_of(refused)
