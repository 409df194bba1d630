"""Reports access: bearer, basic auth and the cookie; the token generated when none is set."""

from __future__ import annotations

import base64

import pytest

from services.reports.auth import Access, basic_password, bearer_token, cookie_value
from services.reports.main import dashboard_url, generated_token_notice, resolve_token
from services.reports.settings import ReportsSettings

TOKEN = "tok-3f9a"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("authorization", "cookie"),
    [
        (f"Bearer {TOKEN}", None),
        (f"bearer   {TOKEN}", None),
        (basic("anyone", TOKEN), None),
        (basic("", TOKEN), None),
        (None, cookie_value(TOKEN)),
        ("Bearer wrong", cookie_value(TOKEN)),
    ],
)
def test_the_token_gets_in_every_way(authorization: str | None, cookie: str | None) -> None:
    assert Access(TOKEN).allows(authorization, cookie)


@pytest.mark.parametrize(
    ("authorization", "cookie"),
    [
        (None, None),
        ("Bearer wrong", None),
        (f"Basic {TOKEN}", None),
        (basic(TOKEN, "wrong"), None),
        (f"Token {TOKEN}", None),
        ("Bearer", None),
        (None, TOKEN),
        (None, cookie_value("another token")),
        (None, ""),
    ],
)
def test_anything_else_is_refused(authorization: str | None, cookie: str | None) -> None:
    assert not Access(TOKEN).allows(authorization, cookie)


def test_the_cookie_is_not_the_token_and_follows_it() -> None:
    assert TOKEN not in cookie_value(TOKEN)
    assert cookie_value(TOKEN) == cookie_value(TOKEN)
    assert cookie_value(TOKEN) != cookie_value(TOKEN + "x")


def test_header_parsing() -> None:
    assert basic_password(basic("u", "p:with:colons")) == "p:with:colons"
    assert basic_password("Basic !!!") is None
    assert basic_password("Basic " + base64.b64encode(b"no colon").decode()) is None
    assert basic_password("Basic " + base64.b64encode(b"\xff:\xfe").decode()) is None
    assert basic_password(f"Bearer {TOKEN}") is None
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(basic("u", TOKEN)) is None


def test_a_configured_token_is_used_as_is() -> None:
    assert resolve_token(ReportsSettings(token=TOKEN, _env_file=None)) == (TOKEN, False)


def test_without_reports_token_a_fresh_one_is_generated() -> None:
    first, generated = resolve_token(ReportsSettings(token=" ", _env_file=None))
    second, _ = resolve_token(ReportsSettings(_env_file=None))
    assert generated
    assert len(first) >= 32
    assert first != second


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8001/"),
        ("127.0.0.1", "http://127.0.0.1:8001/"),
        ("::1", "http://[::1]:8001/"),
        ("reports.local", "http://reports.local:8001/"),
    ],
)
def test_dashboard_url_is_reachable_from_this_machine(host: str, url: str) -> None:
    assert dashboard_url(ReportsSettings(host=host, port=8001, _env_file=None)) == url


def test_the_notice_tells_how_to_get_in() -> None:
    notice = generated_token_notice("http://127.0.0.1:8001/", TOKEN)
    assert f"http://127.0.0.1:8001/?token={TOKEN}" in notice
    assert f'"Authorization: Bearer {TOKEN}"' in notice
    assert "REPORTS_TOKEN" in notice
