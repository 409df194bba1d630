"""What `nps run all` starts and checks, which portal YAML commands read, and the checks of
command arguments that need no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import _database_url_problem, _plan, _surveys_and_reports, survey_page_off
from services.scoring.commands import names_segment
from services.survey.settings import DEMO_KEY, SurveySettings
from shared.settings import EXAMPLE_CONFIG, Settings
from shared.supervisor import Listener


def test_every_listener_of_run_all_has_the_variable_that_moves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPORTS_HOST", "127.0.0.1")
    monkeypatch.setenv("REPORTS_PORT", "28001")
    monkeypatch.setenv("SURVEY_HOST", "127.0.0.1")
    monkeypatch.setenv("SURVEY_PORT", "28002")
    settings = Settings(
        _env_file=None,
        bitrix24_webhook_url=None,
        sandbox_host="127.0.0.1",
        ingest_host="127.0.0.1",
        health_host="127.0.0.1",
        sandbox_port=28090,
        sandbox_smtp_port=28025,
        ingest_port=28000,
        scoring_health_port=29101,
        router_health_port=29102,
        crm_sync_health_port=29103,
        dispatch_health_port=29104,
    )

    plan = _plan(settings)

    assert {p.name: p.listens for p in plan} == {
        "sandbox": Listener("127.0.0.1", 28090, "SANDBOX_PORT"),
        "ingest": Listener("127.0.0.1", 28000, "INGEST_PORT"),
        "scoring": Listener("127.0.0.1", 29101, "SCORING_HEALTH_PORT"),
        "router": Listener("127.0.0.1", 29102, "ROUTER_HEALTH_PORT"),
        "crm_sync": Listener("127.0.0.1", 29103, "CRM_SYNC_HEALTH_PORT"),
        "dispatch": Listener("127.0.0.1", 29104, "DISPATCH_HEALTH_PORT"),
        "reports": Listener("127.0.0.1", 28001, "REPORTS_PORT"),
        "survey": Listener("127.0.0.1", 28002, "SURVEY_PORT"),
    }
    assert {p.name: p.also_listens for p in plan if p.also_listens} == {
        "sandbox": (Listener("127.0.0.1", 28025, "SANDBOX_SMTP_PORT"),),
        "ingest": (Listener("127.0.0.1", 9100, "INGEST_HEALTH_PORT"),),
    }
    assert {p.name: p.env["HEALTH_PORT"] for p in plan if "HEALTH_PORT" in p.env} == {
        "scoring": "29101",
        "router": "29102",
        "crm_sync": "29103",
        "dispatch": "29104",
    }
    dispatch = next(p for p in plan if p.name == "dispatch")
    reports = next(p for p in plan if p.name == "reports")
    for sender in (dispatch, reports):  # survey e-mails and the weekly digest: the sandbox's inbox
        assert sender.env["DISPATCH_SMTP_PORT"] == "28025"


@pytest.mark.parametrize(
    ("webhook", "keys", "started"),
    [
        (None, None, True),
        ("https://portal.example/rest/1/x/", None, False),
        ("https://portal.example/rest/1/x/", "k2,k1", True),
    ],
    ids=["sandbox-demo-key", "portal-no-keys", "portal-keys"],
)
def test_run_all_starts_the_survey_page_when_its_links_can_be_signed(
    monkeypatch: pytest.MonkeyPatch, webhook: str | None, keys: str | None, started: bool
) -> None:
    if keys is None:
        monkeypatch.delenv("SURVEY_KEYS", raising=False)
    else:
        monkeypatch.setenv("SURVEY_KEYS", keys)
    settings = Settings(_env_file=None, bitrix24_webhook_url=webhook)
    assert ("survey" in {p.name for p in _plan(settings)}) is started
    off = survey_page_off(settings, SurveySettings(_env_file=None))
    assert (off is None) is started
    if off is not None:
        assert "SURVEY_KEYS is not set" in off


def test_run_app_with_the_sandbox_signs_links_with_the_demo_key_and_mails_to_its_inbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SURVEY_KEYS", raising=False)
    settings = Settings(_env_file=None, nps_mode="app")
    by_name = {p.name: p for p in _surveys_and_reports(settings)}
    assert set(by_name) == {"dispatch", "reports", "survey"}
    assert by_name["survey"].env["SURVEY_KEYS"] == DEMO_KEY
    assert by_name["dispatch"].env["DISPATCH_SMTP_PORT"] == str(settings.sandbox_smtp_port)


def test_run_app_with_a_real_application_needs_its_own_link_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No webhook URL is set in application mode, yet its portals are real ones: the demo key
    never signs their links, and their e-mails go to the configured SMTP server."""
    monkeypatch.delenv("SURVEY_KEYS", raising=False)
    settings = Settings(_env_file=None, nps_mode="app", bitrix24_client_id="local.abc")
    by_name = {p.name: p for p in _surveys_and_reports(settings)}
    assert set(by_name) == {"dispatch", "reports"}
    assert "DISPATCH_SMTP_PORT" not in by_name["dispatch"].env
    off = survey_page_off(settings, SurveySettings(_env_file=None))
    assert off is not None
    assert "SURVEY_KEYS is not set" in off


@pytest.mark.parametrize(
    ("host", "public", "shown", "ready"),
    [
        ("127.0.0.1", None, "http://127.0.0.1:28002", "http://127.0.0.1:28002"),
        ("0.0.0.0", None, "http://127.0.0.1:28002", "http://127.0.0.1:28002"),
        (
            "127.0.0.1",
            "https://nps.example.com/",
            "https://nps.example.com",
            "http://127.0.0.1:28002",
        ),
    ],
    ids=["loopback", "wildcard", "behind-a-proxy"],
)
def test_run_all_waits_for_the_survey_page_on_its_own_listener(
    monkeypatch: pytest.MonkeyPatch, host: str, public: str | None, shown: str, ready: str
) -> None:
    """Behind a TLS proxy the page's public address is not where `make run` can see it start."""
    monkeypatch.setenv("SURVEY_HOST", host)
    monkeypatch.setenv("SURVEY_PORT", "28002")
    if public is None:
        monkeypatch.delenv("SURVEY_PUBLIC_URL", raising=False)
    else:
        monkeypatch.setenv("SURVEY_PUBLIC_URL", public)
    [survey] = [
        p for p in _plan(Settings(_env_file=None, bitrix24_webhook_url=None)) if p.name == "survey"
    ]
    assert survey.url == f"{shown}/healthz"
    assert survey.ready_url == f"{ready}/healthz"


@pytest.mark.parametrize(
    ("webhook", "exists", "expected"),
    [
        (None, False, EXAMPLE_CONFIG),
        (None, True, "own"),
        ("https://portal.example/rest/1/x/", False, "own"),
        ("https://portal.example/rest/1/x/", True, "own"),
    ],
    ids=["sandbox-no-yaml", "sandbox-own-yaml", "portal-no-yaml", "portal-own-yaml"],
)
def test_portal_config_path(
    tmp_path: Path, webhook: str | None, exists: bool, expected: Path | str
) -> None:
    own = tmp_path / "portal.yaml"
    if exists:
        own.write_text("portal: {}\n")
    settings = Settings(_env_file=None, nps_config=own, bitrix24_webhook_url=webhook)

    assert settings.portal_config_path() == (own if expected == "own" else expected)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://postgres@127.0.0.1:5432/nps", None),
        ("postgres://u:p@db/nps", None),
        ("postgresql:///nps", None),
        ("postgresql://postgres@127.0.0.1:notaport/nps", "Port could not be cast"),
        ("nps", "scheme missing"),
        ("mysql://root@db/nps", "scheme mysql://"),
        ("postgresql://postgres@127.0.0.1:5432/", "no database name"),
        ("postgresql://postgres@[::1/nps", "Invalid IPv6 URL"),
    ],
)
def test_database_url_problem(url: str, problem: str | None) -> None:
    found = _database_url_problem(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


SEGMENTS = [(10, "Cosmetics"), (12, "Laser A")]


@pytest.mark.parametrize(
    ("given", "known"),
    [
        ("10", True),
        ("12", True),
        ("11", False),
        ("cosmetics", True),
        ("LASER A", True),
        ("Cosmetic", False),
        ("laser", False),
        ("\u0661\u0660", False),  # Arabic-Indic digits: a name, not a category id
    ],
)
def test_names_segment(given: str, known: bool) -> None:
    assert names_segment(given, SEGMENTS) is known
