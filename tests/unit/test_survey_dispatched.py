"""Requests from dispatch on the survey page (pure): a `survey.requested` checked against the
portal YAML, and the events the page publishes about a request: `survey.ready`, `survey.opened`,
`survey.opted_out`."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.survey.links import (
    link_path,
    opened_event,
    opted_out_event,
    optout_path,
    ready_event,
)
from services.survey.page_config import PageConfig, page_for, parse_page_config
from services.survey.requests import Language, RequestError, SurveyRequest, requested
from services.survey.tokens import IssuedLink, LinkSigner
from services.survey.views import TEXTS, texts
from shared.events import PortalRef, SurveyRequested
from shared.portal_config import PortalConfig, PortalSection
from shared.survey_page import SurveyPageSection
from tests.support.paths import ROOT

REQUEST = uuid.UUID("0b6f3c1e-2d4a-4e5f-8a9b-1c2d3e4f5a6b")
NOW = 1_800_000_000.0
LOGO = str(ROOT / "config" / "survey-logo.svg")


def event(**changes: Any) -> SurveyRequested:
    fields: dict[str, Any] = {
        "correlation_id": "dispatch-7",
        "request_id": REQUEST,
        "portal": PortalRef(member_id="m-1"),
        "contact_id": 42,
        "category_id": 12,
        "sku": "EQ-LASER-A",
        "lang": "en",
    }
    return SurveyRequested(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, (12, "EQ-LASER-A", None, "en")),
        ({"sku": None}, (12, "EQ-LASER-A", None, "en")),
        ({"category_id": 14, "sku": "EQ-CRYO-B", "lang": "ru"}, (14, "EQ-CRYO-B", None, "ru")),
        ({"category_id": 10, "sku": None}, (10, None, None, "en")),
        ({"category_id": 20, "sku": None, "deal_id": 345}, (20, "DEAL-SALES", 345, "en")),
        ({"category_id": 20, "sku": "DEAL-SALES", "deal_id": 345}, (20, "DEAL-SALES", 345, "en")),
    ],
)
def test_a_request_from_dispatch_is_stored_under_its_own_id(
    portal_config: PortalConfig,
    changes: dict[str, Any],
    expected: tuple[int, str | None, int | None, str],
) -> None:
    request = requested(portal_config, event(**changes))
    assert request.request_id == REQUEST
    assert (request.category_id, request.sku, request.deal_id, request.lang) == expected
    assert (request.portal, request.contact_id, request.correlation_id) == ("m-1", 42, "dispatch-7")
    assert request.events_correlation_id == "dispatch-7"
    assert request.portal_ref == PortalRef(member_id="m-1")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"category_id": 99}, "segment 99 is not in survey.segments; known: 10 (Cosmetics), 12"),
        ({"sku": "EQ-CRYO-B"}, "segment 12 asks about EQ-LASER-A; sku EQ-CRYO-B is not it"),
        ({"category_id": 10, "sku": "COS-SERUM"}, "cosmetics segment"),
        ({"category_id": 12, "deal_id": 5}, "deal category 12 is no deal survey's; known: 20"),
        (
            {"category_id": 20, "sku": "EQ-LASER-A", "deal_id": 5},
            "deal survey After the sale asks about DEAL-SALES; sku EQ-LASER-A is not it",
        ),
        ({"category_id": 20, "sku": None, "deal_id": 0}, "deal 0 is not a deal id"),
        ({"contact_id": 0}, "contact 0 is not a contact id"),
    ],
)
def test_a_request_the_portal_yaml_cannot_serve_is_named(
    portal_config: PortalConfig, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(RequestError) as raised:
        requested(portal_config, event(**changes))
    assert str(raised.value).startswith(f"survey.requested {REQUEST}: ")
    assert message in str(raised.value)


def test_a_pinned_portal_takes_only_its_own_requests(portal_config: PortalConfig) -> None:
    pinned = portal_config.model_copy(update={"portal": PortalSection(member_id="m-1")})
    assert requested(pinned, event(portal=PortalRef())).portal == "m-1"
    assert requested(pinned, event(portal=PortalRef(domain="p.bitrix24.ru"))).portal == "m-1"
    with pytest.raises(RequestError, match="portal 'm-2' is not the portal served"):
        requested(pinned, event(portal=PortalRef(member_id="m-2")))
    unpinned = requested(portal_config, event(portal=PortalRef()))
    assert unpinned.portal == "default"
    assert unpinned.portal_ref == PortalRef()


def test_a_link_is_issued_with_its_expiry() -> None:
    signer = LinkSigner(["k"], 30 * 86400, clock=lambda: NOW + 0.7)
    issued = signer.issue(REQUEST)
    assert issued.expires_at == datetime.fromtimestamp(NOW + 30 * 86400, UTC)
    assert signer.check(issued.token).request_id == REQUEST
    later = LinkSigner(["k"], 30 * 86400, clock=lambda: NOW + 30 * 86400 + 1)
    assert later.check(issued.token).status == "expired"


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
PORTAL_LOGO = "data:image/png;base64," + base64.b64encode(PNG).decode()
FILE_SHA = hashlib.sha256(Path(LOGO).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("logo", "section", "base", "company", "logo_url"),
    [
        (
            LOGO,
            None,
            "https://nps.example.com/",
            "Demo Clinic Supply",
            f"https://nps.example.com/logo/{FILE_SHA}",
        ),
        (None, None, "https://nps.example.com", "Demo Clinic Supply", None),
        # A portal's own page: its company and logo; its name alone keeps the page YAML's logo.
        (
            LOGO,
            {"company": {"name": "Alpha", "logo": PORTAL_LOGO}},
            "https://nps.example.com",
            "Alpha",
            f"https://nps.example.com/logo/{hashlib.sha256(PNG).hexdigest()}",
        ),
        (
            LOGO,
            {"company": {"name": "Alpha"}},
            "https://nps.example.com",
            "Alpha",
            f"https://nps.example.com/logo/{FILE_SHA}",
        ),
    ],
)
def test_survey_ready_carries_the_links_company_and_expiry(
    logo: str | None,
    section: dict[str, Any] | None,
    base: str,
    company: str,
    logo_url: str | None,
) -> None:
    config = parse_page_config({"company": {"name": "Demo Clinic Supply", "logo": logo}}, "page")
    own = None if section is None else SurveyPageSection.model_validate(section)
    page = page_for(config, own)
    cause = event()
    expires = datetime(2027, 1, 15, 8, tzinfo=UTC)
    ready = ready_event(cause, IssuedLink("TOKEN", expires), page, base)
    assert ready.url == "https://nps.example.com/s/TOKEN"
    assert ready.optout_url == "https://nps.example.com/s/TOKEN/optout"
    assert (ready.company, ready.logo_url, ready.expires_at) == (company, logo_url, expires)
    assert (ready.request_id, ready.portal) == (REQUEST, cause.portal)
    assert (ready.correlation_id, ready.causation_id) == ("dispatch-7", str(cause.event_id))
    assert ready.event_id == ready_event(cause, IssuedLink("OTHER", expires), page, base).event_id
    assert ready.event_id != ready_event(event(), IssuedLink("TOKEN", expires), page, base).event_id


def test_opened_and_opted_out_name_the_request_once() -> None:
    request = SurveyRequest(REQUEST, "m-1", 42, 12, "EQ-LASER-A", "en", correlation_id="d-7")
    by_hand = SurveyRequest(REQUEST, "default", 42, 12, "EQ-LASER-A", "en")
    at = datetime(2027, 1, 2, 3, 4, tzinfo=UTC)
    opened = opened_event(request, at)
    assert (opened.request_id, opened.portal, opened.opened_at) == (
        REQUEST,
        PortalRef(member_id="m-1"),
        at,
    )
    assert opened.correlation_id == "d-7"
    assert opened.event_id == opened_event(request, datetime.now(UTC)).event_id
    out = opted_out_event(by_hand, at)
    assert (out.request_id, out.contact_id, out.opted_out_at, out.portal) == (
        REQUEST,
        42,
        at,
        PortalRef(),
    )
    assert out.correlation_id == f"survey-{REQUEST}"
    assert out.event_id == opted_out_event(by_hand, datetime.now(UTC)).event_id
    assert out.event_id != opened.event_id


def test_paths() -> None:
    assert (link_path("T"), optout_path("T")) == ("/s/T", "/s/T/optout")


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_the_opt_out_texts_exist_in_both_languages_and_may_be_replaced(lang: Language) -> None:
    keys = ("optout_title", "optout_text", "optout_submit", "optout_done", "optout_link")
    assert all(TEXTS[lang][key] for key in keys)
    page = PageConfig.model_validate(
        {"company": {"name": "C"}, "texts": {lang: {"optout_submit": "Stop"}}}
    )
    assert texts(page, lang)["optout_submit"] == "Stop"
    assert texts(page, lang)["optout_done"] == TEXTS[lang]["optout_done"]
