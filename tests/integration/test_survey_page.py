"""The survey page against the real PostgreSQL: forms, answers stored once and changed in place,
thank-you pages, broken links, CSRF, limits and headers."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.survey.app import CONTENT_SECURITY_POLICY, PageSetup, create_app
from services.survey.requests import SurveyRequest, new_deal_request, new_request
from services.survey.store import add_request, keep_logo
from services.survey.tokens import LinkSigner
from shared.events import SurveyAnswered
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.portals import PortalConfigs
from shared.survey_page import Logo, SurveyPageSection
from tests.support.survey import DAY, KEYS, page_config, setup_for


@pytest.fixture
async def client_for(
    pool: asyncpg.Pool,
) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(setup: PageSetup) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=create_app(pool, Outbox(), setup))
        client = httpx.AsyncClient(transport=transport, base_url="http://survey.test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def make_link(
    pool: asyncpg.Pool, config: PortalConfig, segment: str, lang: str = "en"
) -> tuple[SurveyRequest, str]:
    request = new_request(
        config, contact_id=42, segment=segment, product=None, lang=lang, portal="default"
    )
    async with pool.acquire() as conn:
        await add_request(conn, request)
    return request, "/s/" + LinkSigner(KEYS, 30 * DAY, clock=lambda: 1_800_000_000.0).sign(
        request.request_id
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def stored(pool: asyncpg.Pool, request_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT version, answer FROM survey_answers WHERE request_id = $1", request_id
    )


async def test_equipment_answer_is_stored_then_thanked(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    client = client_for(setup_for(portal_config))
    request, link = await make_link(pool, portal_config, "12")
    page = await client.get(link, params={"score": "9"})
    assert page.status_code == 200
    assert "Laser A" in page.text
    assert 'id="score-9" name="score" value="9" checked' in page.text
    assert page.text.count('type="radio"') == 11
    assert 'name="service"' in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in page.text
    form = {"csrf": csrf_of(page.text), "score": "10", "service": "1", "comment": "<b>ok</b>"}
    sent = await client.post(link, data=form)
    assert sent.status_code == 303
    assert sent.headers["location"] == f"{link}/thanks"
    row = await stored(pool, request.request_id)
    assert row is not None
    assert row["version"] == 1
    assert '"service_request": true' in row["answer"]
    thanks = await client.get(f"{link}/thanks")
    assert thanks.status_code == 200
    assert "glad you are happy" in thanks.text
    assert "Yandex Maps" in thanks.text
    again = await client.get(link)
    assert "&lt;b&gt;ok&lt;/b&gt;" in again.text
    assert "change your answer" in again.text


async def test_a_double_submit_is_one_answer_and_a_change_updates_it(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    client = client_for(setup_for(portal_config))
    request, link = await make_link(pool, portal_config, "14", lang="ru")
    page = await client.get(link)
    assert 'lang="ru"' in page.text
    form = {"csrf": csrf_of(page.text), "score": "3"}
    assert (await client.post(link, data=form)).status_code == 303
    assert (await client.post(link, data=form)).status_code == 303
    row = await stored(pool, request.request_id)
    assert row is not None
    assert row["version"] == 1
    thanks = await client.get(f"{link}/thanks")
    assert "Спасибо за откровенность" in thanks.text
    assert "Yandex Maps" not in thanks.text
    assert (await client.post(link, data={**form, "score": "9"})).status_code == 303
    row = await stored(pool, request.request_id)
    assert row is not None
    assert row["version"] == 2
    assert '"EQ-CRYO-B": 9' in row["answer"]
    count = await pool.fetchval(
        "SELECT count(*) FROM survey_answers WHERE request_id = $1", request.request_id
    )
    assert count == 1
    queued = await pool.fetch(
        """SELECT routing_key, body FROM outbox
           WHERE correlation_id = $1 AND routing_key <> 'survey.opened' ORDER BY id""",
        f"survey-{request.request_id}",
    )
    events = [SurveyAnswered.model_validate_json(row["body"]) for row in queued]
    assert [row["routing_key"] for row in queued] == ["survey.answered"] * 2
    assert [(e.version, e.answers[0].score, e.contact_id) for e in events] == [
        (1, 3, 42),
        (2, 9, 42),
    ]


async def test_cosmetics_form_asks_each_product(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    client = client_for(setup_for(portal_config))
    request, link = await make_link(pool, portal_config, "10")
    page = await client.get(link)
    assert page.text.count('type="checkbox"') == 4
    assert 'name="service"' not in page.text
    for name in ("Serum", "Day cream", "Hydrating mask", "Enzyme peel"):
        assert name in page.text
    form = {
        "csrf": csrf_of(page.text),
        "tested_0": "1",
        "score_0": "10",
        "tested_1": "1",
        "score_2": "8",
    }
    assert (await client.post(link, data=form)).status_code == 303
    row = await stored(pool, request.request_id)
    assert row is not None
    assert json.loads(row["answer"])["scores"] == {
        "COS-SERUM": 10,
        "COS-CREAM": None,
        "COS-MASK": 8,
    }


async def test_a_deal_survey_asks_one_score_on_its_own_scale_with_its_own_texts(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    deal = portal_config.deal_surveys[0].model_copy(update={"scale": "binary"})
    config = portal_config.model_copy(update={"deal_surveys": [deal]})
    texts = {"After the sale": {"en": {"question_product": "Was {product} good to you?"}}}
    client = client_for(setup_for(config, page=page_config(deal_texts=texts)))
    request = new_deal_request(deal, deal_id=77, contact_id=42, lang="en", portal="default")
    async with pool.acquire() as conn:
        await add_request(conn, request)
    link = "/s/" + LinkSigner(KEYS, 30 * DAY, clock=lambda: 1_800_000_000.0).sign(
        request.request_id
    )
    page = await client.get(link, params={"score": "1"})
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "Was Sales good to you?" in page.text
    assert page.text.count('type="radio"') == 2
    assert 'id="score-1" name="score" value="1" checked' in page.text
    assert 'name="service"' not in page.text
    assert (await client.post(link, data={"score": "1"})).status_code == 403
    form = {"csrf": csrf_of(page.text), "score": "1", "service": "1", "comment": "Quick"}
    assert (await client.post(link, data=form)).status_code == 303
    thanks = await client.get(f"{link}/thanks")
    assert "glad you are happy" in thanks.text
    assert (await client.post(link, data={**form, "score": "0"})).status_code == 303
    queued = await pool.fetch(
        """SELECT body FROM outbox
           WHERE correlation_id = $1 AND routing_key = 'survey.answered' ORDER BY id""",
        f"survey-{request.request_id}",
    )
    events = [SurveyAnswered.model_validate_json(row["body"]) for row in queued]
    assert [
        (e.version, e.deal_id, e.category_id, e.scale, e.answers[0].sku, e.answers[0].score)
        for e in events
    ] == [(1, 77, 20, "binary", "DEAL-SALES", 1), (2, 77, 20, "binary", "DEAL-SALES", 0)]
    assert not any(e.service_request for e in events)
    assert events[1].comment == "Quick"


async def test_binary_scale(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    client = client_for(setup_for(portal_config, scale="binary"))
    request, link = await make_link(pool, portal_config, "12")
    page = await client.get(link)
    assert page.text.count('type="radio"') == 2
    assert "Satisfied" in page.text
    form = {"csrf": csrf_of(page.text), "score": "0"}
    assert (await client.post(link, data=form)).status_code == 303
    assert (await client.post(link, data={**form, "score": "5"})).status_code == 422
    row = await stored(pool, request.request_id)
    assert row is not None
    assert '"EQ-LASER-A": 0' in row["answer"]


@pytest.mark.parametrize(
    ("age_s", "tamper", "status"),
    [(31 * DAY, False, 410), (0, True, 404)],
)
async def test_expired_and_tampered_links_store_nothing(
    pool: asyncpg.Pool,
    portal_config: PortalConfig,
    client_for: Any,
    age_s: int,
    tamper: bool,
    status: int,
) -> None:
    fresh = client_for(setup_for(portal_config))
    request, link = await make_link(pool, portal_config, "12")
    csrf = csrf_of((await fresh.get(link)).text)
    later = client_for(setup_for(portal_config, now=1_800_000_000.0 + age_s))
    later.cookies = fresh.cookies
    if tamper:
        link = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
    for response in (
        await later.get(link),
        await later.post(link, data={"csrf": csrf, "score": "9"}),
        await later.get(f"{link}/thanks"),
    ):
        assert response.status_code == status
        assert "<h1>" in response.text
    assert await stored(pool, request.request_id) is None


async def test_unknown_request(portal_config: PortalConfig, client_for: Any) -> None:
    client = client_for(setup_for(portal_config))
    signer = LinkSigner(KEYS, 30 * DAY, clock=lambda: 1_800_000_000.0)
    response = await client.get("/s/" + signer.sign(uuid.uuid4()))
    assert response.status_code == 404


@pytest.mark.parametrize(
    "form",
    [{"score": "9"}, {"score": "9", "csrf": "forged"}],
)
async def test_a_form_without_its_csrf_field_is_refused(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any, form: dict[str, str]
) -> None:
    client = client_for(setup_for(portal_config))
    request, link = await make_link(pool, portal_config, "12")
    await client.get(link)
    response = await client.post(link, data=form)
    assert response.status_code == 403
    assert "expired" in response.text
    assert await stored(pool, request.request_id) is None


async def test_another_browsers_csrf_field_is_refused(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    setup = setup_for(portal_config)
    mine, theirs = client_for(setup), client_for(setup)
    request, link = await make_link(pool, portal_config, "12")
    csrf = csrf_of((await mine.get(link)).text)
    await theirs.get(link)
    assert (await theirs.post(link, data={"csrf": csrf, "score": "9"})).status_code == 403
    assert await stored(pool, request.request_id) is None


async def test_limits_and_body_bound(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    client = client_for(setup_for(portal_config, rate=4))
    _request, link = await make_link(pool, portal_config, "12")
    assert (await client.get(link)).status_code == 200
    assert (await client.get(link)).status_code == 200
    busy = await client.get(link)
    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "60"
    other = client_for(setup_for(portal_config, rate=1000))
    big = await other.post(link, content=b"score=9&comment=" + b"x" * 20_000)
    assert big.status_code == 413


async def test_a_template_directory_replaces_the_built_in_page(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any, tmp_path: Path
) -> None:
    (tmp_path / "thanks.html").write_text(
        '{% extends "base.html" %}{% block main %}<p>Custom {{ category }}</p>{% endblock %}'
    )
    client = client_for(setup_for(portal_config, page=page_config(templates=str(tmp_path))))
    _request, link = await make_link(pool, portal_config, "12")
    csrf = csrf_of((await client.get(link)).text)
    await client.post(link, data={"csrf": csrf, "score": "7"})
    assert "<p>Custom passive</p>" in (await client.get(f"{link}/thanks")).text


async def test_the_logo_and_style_sheet_come_from_the_page_itself(
    portal_config: PortalConfig, client_for: Any
) -> None:
    client = client_for(setup_for(portal_config))
    moved = await client.get("/logo")  # e-mails sent before the logo's URL named its content
    assert moved.status_code == 308
    assert re.fullmatch(r"/logo/[0-9a-f]{64}", moved.headers["location"])
    logo = await client.get(moved.headers["location"])
    assert logo.status_code == 200
    assert logo.headers["content-type"] == "image/svg+xml"
    assert logo.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert logo.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert (await client.get("/logo/" + "0" * 64)).status_code == 404
    assert (await client.get("/logo/not-a-hash")).status_code == 404
    css = await client.get("/static/survey.css")
    assert css.status_code == 200
    assert css.headers["x-content-type-options"] == "nosniff"


async def test_no_token_answer_or_contact_in_the_logs(
    pool: asyncpg.Pool,
    portal_config: PortalConfig,
    client_for: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = client_for(setup_for(portal_config))
    request, link = await make_link(pool, portal_config, "12")
    csrf = csrf_of((await client.get(link)).text)
    form = {"csrf": csrf, "score": "2", "comment": "call me at +7 900 000-00-00"}
    assert (await client.post(link, data=form)).status_code == 303
    await client.get(f"{link}/thanks")
    await client.get(link[:-3] + "xyz")
    assert (await client.get(f"{link}/optout")).status_code == 200
    assert (await client.post(f"{link}/optout", data={"csrf": csrf})).status_code == 303
    logged = capsys.readouterr()
    lines = logged.out + logged.err
    for event in ("survey_answered", "survey_opened", "survey_opted_out"):
        assert event in lines
    token = link.removeprefix("/s/")
    for secret in (token, token[:20], csrf, "+7 900", str(request.contact_id) + " "):
        assert secret not in lines


async def test_a_refused_form_is_shown_again_with_what_was_entered(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    client = client_for(setup_for(portal_config))
    request, link = await make_link(pool, portal_config, "12")
    csrf = csrf_of((await client.get(link)).text)
    refused = await client.post(link, data={"csrf": csrf, "service": "1", "comment": "No score"})
    assert refused.status_code == 422
    assert "Choose a score on the scale." in refused.text
    assert ">No score</textarea>" in refused.text
    assert 'name="service" value="1" checked' in refused.text
    assert "change your answer" not in refused.text
    assert await stored(pool, request.request_id) is None


async def test_over_https_the_cookie_is_secure_and_hsts_is_sent(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    setup = setup_for(portal_config)
    client = client_for(
        PageSetup(
            portal=setup.portal,
            page=setup.page,
            signer=setup.signer,
            secure=True,
            rate_per_minute=setup.rate_per_minute,
        )
    )
    _request, link = await make_link(pool, portal_config, "12")
    page = await client.get(link)
    assert page.headers["strict-transport-security"] == "max-age=31536000"
    cookie = page.headers["set-cookie"]
    for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/s/"):
        assert attribute in cookie


async def test_with_several_portals_each_link_asks_by_its_own_portals_configuration(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    """Application mode: the page serves every installed portal (`PortalConfigs`), each
    request's page asks what its own portal's configuration says (here alpha's deal survey on
    a binary scale, beta's on 0-10); an uninstalled portal's links are gone (410)."""
    deal = portal_config.deal_surveys[0]
    binary = portal_config.model_copy(
        update={"deal_surveys": [deal.model_copy(update={"scale": "binary"})]}
    )
    configs = PortalConfigs({"alpha-key": binary, "beta-key": portal_config})
    setup = dataclasses.replace(setup_for(portal_config), portal=configs)
    client = client_for(setup)
    signer = LinkSigner(KEYS, 30 * DAY, clock=lambda: 1_800_000_000.0)
    links: dict[str, str] = {}
    for key in ("alpha-key", "beta-key"):
        request = new_deal_request(deal, deal_id=77, contact_id=42, lang="en", portal=key)
        async with pool.acquire() as conn:
            await add_request(conn, request)
        links[key] = "/s/" + signer.sign(request.request_id)
    alpha = await client.get(links["alpha-key"])
    beta = await client.get(links["beta-key"])
    assert alpha.text.count('type="radio"') == 2
    assert beta.text.count('type="radio"') == 11
    configs.remove("beta-key", "uninstalled")
    assert (await client.get(links["beta-key"])).status_code == 410
    assert (await client.get(links["alpha-key"])).status_code == 200


async def test_with_several_portals_each_page_shows_its_own_portals_company_logo_and_texts(
    pool: asyncpg.Pool, portal_config: PortalConfig, client_for: Any
) -> None:
    """A portal's `survey_page` (its company, logo, texts, review links) over the page YAML on
    its own links' pages; a portal without one shows the page YAML's; each logo at the URL of
    its content, cacheable, the same for every link; an uninstalled portal's logo is gone."""
    png = b"\x89PNG\r\n\x1a\n" + b"alpha's logo"
    own = SurveyPageSection.model_validate(
        {
            "company": {
                "name": "Alpha Clinic",
                "logo": "data:image/png;base64," + base64.b64encode(png).decode(),
            },
            "texts": {"en": {"submit": "Send it to Alpha"}},
            "reviews": {
                "show_to": "everyone",
                "links": [{"name": "Alpha", "url": "https://a.example/r"}],
            },
        }
    )
    alpha_config = portal_config.model_copy(update={"survey_page": own})
    configs = PortalConfigs({"alpha-key": alpha_config, "beta-key": portal_config})
    setup = dataclasses.replace(setup_for(portal_config), portal=configs)
    client = client_for(setup)
    signer = LinkSigner(KEYS, 30 * DAY, clock=lambda: 1_800_000_000.0)
    links: dict[str, str] = {}
    for key in ("alpha-key", "beta-key"):
        request = new_request(
            portal_config, contact_id=42, segment="12", product=None, lang="en", portal=key
        )
        async with pool.acquire() as conn:
            await add_request(conn, request)
        links[key] = "/s/" + signer.sign(request.request_id)
    alpha_sha = hashlib.sha256(png).hexdigest()
    deployment = setup.page.company

    alpha = (await client.get(links["alpha-key"])).text
    beta = (await client.get(links["beta-key"])).text
    assert "Alpha Clinic" in alpha
    assert deployment.name not in alpha
    assert f'<img src="/logo/{alpha_sha}"' in alpha
    assert "Send it to Alpha" in alpha
    assert deployment.name in beta
    assert "Alpha" not in beta
    assert deployment.logo is not None
    file_sha = hashlib.sha256(deployment.logo.read_bytes()).hexdigest()
    assert f'<img src="/logo/{file_sha}"' in beta

    csrf = csrf_of(alpha)
    assert (
        await client.post(links["alpha-key"], data={"csrf": csrf, "score": "4"})
    ).status_code == 303
    thanks = (await client.get(f"{links['alpha-key']}/thanks")).text
    assert 'href="https://a.example/r"' in thanks
    assert "Alpha Clinic" in thanks

    logo = await client.get(f"/logo/{alpha_sha}")
    assert (logo.status_code, logo.content, logo.headers["content-type"]) == (200, png, "image/png")
    assert logo.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert logo.headers["cross-origin-resource-policy"] == "cross-origin"
    assert logo.headers["x-content-type-options"] == "nosniff"
    assert (await client.get(f"/logo/{file_sha}")).status_code == 200
    configs.remove("alpha-key", "uninstalled")
    assert (await client.get(f"/logo/{alpha_sha}")).status_code == 404
    # A logo an e-mail linked to (the intake kept it) answers after its page stopped showing it.
    async with pool.acquire() as conn:
        await keep_logo(conn, Logo(png, "image/png"))
    kept = await client.get(f"/logo/{alpha_sha}")
    assert (kept.status_code, kept.content, kept.headers["content-type"]) == (200, png, "image/png")
    assert kept.headers["cache-control"] == "public, max-age=31536000, immutable"
