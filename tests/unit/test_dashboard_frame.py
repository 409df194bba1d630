"""The dashboard inside a portal, its pure parts: the frame session and its CSRF token (signed,
expiring, bound to one session), the session kept in every link and form of the pages, and the
contact card's tab (its contact read from `PLACEMENT_OPTIONS`, the `contact` filter)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date

import pytest

from services.reports import pages
from services.reports.filters import FilterError, Filters, parse_filters
from services.reports.frame import FrameRefused, _placed_id
from services.reports.frame_session import FRAME_SESSION_TTL_S, FrameSessions, FrameUser
from services.reports.views import FilterOptions, distribution, ops_view

NOW = 1_780_000_000.0
NO_SCORES = distribution({})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(clock: Clock) -> FrameSessions:
    return FrameSessions("secret-one", clock=clock)


def test_a_session_names_its_portal_and_user(sessions: FrameSessions) -> None:
    token = sessions.issue("member-a", 7, admin=True)
    user = sessions.read(token)
    assert user is not None
    assert (user.member_id, user.user_id, user.admin) == ("member-a", 7, True)
    other = sessions.read(sessions.issue("member-a", 7, admin=True))
    assert other is not None
    assert other.nonce != user.nonce


@pytest.mark.parametrize(
    ("age", "valid"),
    [(0, True), (FRAME_SESSION_TTL_S, True), (FRAME_SESSION_TTL_S + 1, False)],
)
def test_a_session_expires(sessions: FrameSessions, clock: Clock, age: int, *, valid: bool) -> None:
    token = sessions.issue("member-a", 7, admin=False)
    clock.now += age
    assert (sessions.read(token) is not None) is valid


def test_a_session_cannot_be_forged_or_altered(sessions: FrameSessions, clock: Clock) -> None:
    token = sessions.issue("member-a", 7, admin=False)
    payload, _, signature = token.partition(".")
    forged = [
        "",
        "made-up",
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        FrameSessions("another-secret", clock=clock).issue("member-a", 7, admin=True),
        "x" * 500,
        f"{payload}x.{signature}",
    ]
    for given in forged:
        assert sessions.read(given) is None, given
    # A CSRF token (another salt, the same secret) is no session.
    user = sessions.read(token)
    assert user is not None
    assert sessions.read(sessions.csrf(user)) is None


def test_the_csrf_token_fits_its_own_session_only(sessions: FrameSessions, clock: Clock) -> None:
    first = sessions.read(sessions.issue("member-a", 7, admin=True))
    second = sessions.read(sessions.issue("member-a", 7, admin=True))
    assert first is not None
    assert second is not None
    token = sessions.csrf(first)
    assert sessions.csrf_matches(first, token)
    assert not sessions.csrf_matches(second, token)
    assert not sessions.csrf_matches(first, None)
    assert not sessions.csrf_matches(first, "")
    assert not sessions.csrf_matches(first, sessions.issue("member-a", 7, admin=True))
    clock.now += FRAME_SESSION_TTL_S + 1
    assert not sessions.csrf_matches(first, token)


def test_a_session_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="signing secret"):
        FrameSessions("")


OPTIONS = FilterOptions(
    portals=("member-a",), segments=((10, "Cosmetics"),), catalogue={}, managers=()
)


def test_every_link_and_form_of_a_frame_page_keeps_the_session() -> None:
    filters = Filters(segment="Cosmetics", session="SESSION.x-y")
    page = pages.managers_page(
        filters, OPTIONS, [], api_url=filters.api_url("manager"), scores=NO_SCORES
    )
    links = re.findall(r'href="(/[^"]*)"', page)
    inner = [link for link in links if not link.startswith("/static")]
    assert inner
    assert all("s=SESSION.x-y" in link for link in inner), inner
    assert '<input type="hidden" name="s" value="SESSION.x-y">' in page
    assert 'href="/managers?s=SESSION.x-y">clear</a>' in page
    assert 'href="/settings?s=SESSION.x-y">Settings</a>' in page
    assert 'name="portal"' not in page
    # Without a session: no settings link, and links as before.
    plain = pages.managers_page(
        Filters(segment="Cosmetics"), OPTIONS, [], api_url="/api", scores=NO_SCORES
    )
    assert "/settings" not in plain
    assert "?s=" not in plain
    assert "&amp;s=" not in plain
    assert 'href="/managers">clear</a>' in plain
    problems = pages.problems_page(pages.TREND, OPTIONS, ["from: bad"], session="SESSION.x-y")
    assert 'href="/?s=SESSION.x-y">clear</a>' in problems


def test_a_frame_page_may_be_framed_by_its_portal_only() -> None:
    policy = pages.frame_policy("https://alpha.bitrix24.ru")
    assert "frame-ancestors https://alpha.bitrix24.ru" in policy
    assert "'none'; style-src 'self'" in policy
    assert "frame-ancestors 'none'" in pages.CONTENT_SECURITY_POLICY


def test_the_ops_page_of_a_frame_leaves_the_deployment_s_queues_out() -> None:
    view = ops_view(0, [], None, ["scoring.submissions"], None)
    framed = pages.ops_page(Filters(session="S"), OPTIONS, view)
    assert "Dead letters" not in framed
    assert "crm_sync lanes" not in framed
    assert "belong to the whole deployment" in framed
    assert "Dead letters" in pages.ops_page(Filters(), OPTIONS, view)


def test_the_settings_page_escapes_the_yaml_and_names_the_problems() -> None:
    user = FrameUser("member-a", 7, admin=True, nonce="n")
    form = pages.SettingsForm(
        session="S",
        csrf="C",
        text="portal: {timezone: '</textarea><script>alert(1)</script>'}",
        version=3,
        source="stored version 3",
        may_save=user.admin,
        problems=("portal.timezone: unknown time zone '<b>'",),
    )
    page = pages.settings_page(form)
    assert "<script>" not in page
    assert "&lt;/textarea&gt;&lt;script&gt;" in page
    assert "portal.timezone: unknown time zone &#x27;&lt;b&gt;&#x27;" in page
    assert '<input type="hidden" name="version" value="3">' in page
    assert '<input type="hidden" name="csrf" value="C">' in page
    assert "<button" in page
    assert "readonly" not in page
    read_only = pages.settings_page(
        pages.SettingsForm("S", "C", "", None, "the template", may_save=False)
    )
    assert "readonly" in read_only
    assert "<button" not in read_only
    assert '<input type="hidden" name="version" value="">' in read_only
    assert 'href="/settings?s=S" class="on">Settings</a>' in read_only


def test_the_contact_filter_is_read_kept_in_links_and_refused_by_name() -> None:
    filters = parse_filters({"contact": "502", "s": "S"}, date(2024, 6, 1))
    assert filters.contact == 502
    assert filters.session is None  # the session is checked, then set, by the app
    assert filters.ratings({}).contact == 502
    assert "contact=502" in replace(filters, session="S").query_string()
    for bad in ("abc", "0", "-3", "99999999999", "5.0"):
        with pytest.raises(FilterError) as refused:
            parse_filters({"contact": bad}, date(2024, 6, 1))
        assert refused.value.problems[0].startswith("contact: expected a contact id"), bad
        with pytest.raises(FilterError) as refused:
            parse_filters({"deal": bad}, date(2024, 6, 1))
        assert refused.value.problems[0].startswith("deal: expected a deal id"), bad


@pytest.mark.parametrize(
    ("placement", "options", "contact"),
    [
        ("DEFAULT", None, None),
        ("LEFT_MENU", '{"ID": "x"}', None),
        ("CRM_CONTACT_DETAIL_TAB", '{"ID": "13037"}', 13037),
        ("CRM_CONTACT_DETAIL_TAB", '{"ID": 7}', 7),
        ("CRM_DEAL_DETAIL_TAB", '{"ID": "77"}', 77),
    ],
)
def test_a_card_tab_names_its_contact_or_deal(
    placement: str, options: str | None, contact: int | None
) -> None:
    assert _placed_id(placement, options) == contact


@pytest.mark.parametrize(
    "options", [None, "", "{}", "not json", '{"ID": "0"}', '{"ID": "a"}', "[]"]
)
@pytest.mark.parametrize(
    ("placement", "card"), [("CRM_CONTACT_DETAIL_TAB", "contact"), ("CRM_DEAL_DETAIL_TAB", "deal")]
)
def test_a_card_tab_without_its_id_is_refused(
    options: str | None, placement: str, card: str
) -> None:
    with pytest.raises(FrameRefused) as refused:
        _placed_id(placement, options)
    assert (refused.value.status, refused.value.message) == (
        400,
        f"PLACEMENT_OPTIONS: expected the {card} card's ID",
    )
