"""The application's lifecycle requests read and checked, and the bindings it wants (pure)."""

from typing import Any

import pytest

from services.app.lifecycle import (
    INGEST_EVENTS,
    Binding,
    LifecycleError,
    missing_bindings,
    missing_placements,
    pair_for,
    read_event,
    read_install_form,
    same_token,
    wanted_bindings,
    wanted_placements,
)
from services.ingest.webhook import DEAL_EVENTS, ITEM_EVENTS, UPDATE_EVENTS

QUERY = {"DOMAIN": "acme.bitrix24.com", "PROTOCOL": "1", "LANG": "en", "APP_SID": "s"}
FORM = {
    "AUTH_ID": "a-token",
    "AUTH_EXPIRES": "3600",
    "REFRESH_ID": "r-token",
    "SERVER_ENDPOINT": "https://oauth.bitrix.info/rest/",
    "member_id": "m-1",
    "status": "L",
    "PLACEMENT": "DEFAULT",
    "APPLICATION_TOKEN": "app-token",
}
UNINSTALL = {
    "event": "ONAPPUNINSTALL",
    "data[LANGUAGE_ID]": "en",
    "data[CLEAN]": "1",
    "ts": "1766047124",
    "auth[domain]": "acme.bitrix24.com",
    "auth[member_id]": "m-1",
    "auth[application_token]": "app-token",
}


def test_the_install_form() -> None:
    form = read_install_form(QUERY, FORM)
    assert (form.member_id, form.domain, form.access_token, form.refresh_token) == (
        "m-1",
        "acme.bitrix24.com",
        "a-token",
        "r-token",
    )
    assert (form.expires_in, form.application_token) == (3600.0, "app-token")
    assert "a-token" not in repr(form)
    assert "r-token" not in repr(form)
    without = read_install_form(QUERY, {**FORM, "APPLICATION_TOKEN": ""})
    assert without.application_token is None


@pytest.mark.parametrize(
    ("query", "body", "field"),
    [
        (QUERY, {**FORM, "AUTH_ID": ""}, "AUTH_ID"),
        (QUERY, {k: v for k, v in FORM.items() if k != "REFRESH_ID"}, "REFRESH_ID"),
        (QUERY, {**FORM, "member_id": " "}, "member_id"),
        ({"PROTOCOL": "1"}, FORM, "DOMAIN"),
        (QUERY, {**FORM, "AUTH_EXPIRES": "soon"}, "AUTH_EXPIRES"),
        (QUERY, {**FORM, "AUTH_EXPIRES": "0"}, "AUTH_EXPIRES"),
    ],
)
def test_what_the_install_form_must_hold(
    query: dict[str, str], body: dict[str, str], field: str
) -> None:
    with pytest.raises(LifecycleError) as caught:
        read_install_form(query, body)
    assert caught.value.field == field
    assert caught.value.status == 400
    assert caught.value.body()["field"] == field


def test_an_uninstall_event() -> None:
    event = read_event(UNINSTALL)
    assert (event.event, event.member_id, event.domain, event.application_token) == (
        "ONAPPUNINSTALL",
        "m-1",
        "acme.bitrix24.com",
        "app-token",
    )
    assert (event.access_token, event.refresh_token, event.expires_in, event.clean) == (
        None,
        None,
        None,
        True,
    )
    assert read_event({**UNINSTALL, "data[CLEAN]": "0"}).clean is False


def test_an_install_event_with_its_pair() -> None:
    event = read_event(
        {
            **UNINSTALL,
            "event": "onAppInstall",
            "auth[access_token]": "a",
            "auth[refresh_token]": "r",
            "auth[expires_in]": "3600",
        }
    )
    assert (event.event, event.access_token, event.refresh_token, event.expires_in) == (
        "ONAPPINSTALL",
        "a",
        "r",
        3600.0,
    )
    assert "'a'" not in repr(event)


def test_an_update_event_with_its_version() -> None:
    event = read_event(
        {
            **UNINSTALL,
            "event": "ONAPPUPDATE",
            "data[VERSION]": "3",
            "data[PREVIOUS_VERSION]": "2",
            "auth[access_token]": "a",
        }
    )
    assert (event.event, event.version, event.access_token) == ("ONAPPUPDATE", 3, "a")
    assert read_event(UNINSTALL).version is None
    for wrong in ("three", "0", "-1", "99999999999", "\uff13"):
        with pytest.raises(LifecycleError) as caught:
            read_event({**UNINSTALL, "event": "ONAPPUPDATE", "data[VERSION]": wrong})
        assert caught.value.field == "data[VERSION]"


def test_the_widgets_are_the_card_tabs_on_the_frame_and_those_missing() -> None:
    assert wanted_placements(None) == []
    wanted = wanted_placements("https://nps/frame")
    assert [p.placement for p in wanted] == ["CRM_CONTACT_DETAIL_TAB", "CRM_DEAL_DETAIL_TAB"]
    assert wanted[0].params() == {
        "PLACEMENT": "CRM_CONTACT_DETAIL_TAB",
        "HANDLER": "https://nps/frame",
        "TITLE": "NPS",
    }
    elsewhere = [{"placement": "CRM_CONTACT_DETAIL_TAB", "handler": "https://old/frame"}, "junk"]
    assert missing_placements(wanted, elsewhere) == wanted
    here = [{"placement": "crm_contact_detail_tab", "handler": "https://nps/frame"}]
    assert missing_placements(wanted, here) == wanted[1:]
    both = [*here, {"placement": "CRM_DEAL_DETAIL_TAB", "handler": "https://nps/frame"}]
    assert missing_placements(wanted, both) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event": "ONCRMDEALADD"}, "event"),
        ({"event": ""}, "event"),
        ({"auth[member_id]": ""}, "auth[member_id]"),
        ({"auth[application_token]": ""}, "auth[application_token]"),
        ({"auth[expires_in]": "never"}, "auth[expires_in]"),
    ],
)
def test_what_an_event_must_hold(change: dict[str, str], field: str) -> None:
    with pytest.raises(LifecycleError) as caught:
        read_event({**UNINSTALL, **change})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("stored", "given", "same"),
    [
        ("app-token", "app-token", True),
        ("app-token", "app-tokeN", False),
        ("app-token", "", False),
        (None, "app-token", False),
        (None, "", False),
    ],
)
def test_the_application_token_check(stored: str | None, given: str, same: bool) -> None:
    assert same_token(stored, given) is same


def test_an_installs_pair_expires_from_now() -> None:
    pair = pair_for(
        "m-1", "a", "r", 3600.0, client_endpoint="https://acme/rest/", scope="crm", now=10.0
    )
    assert (pair.expires_at, pair.member_id, pair.client_endpoint) == (
        3610.0,
        "m-1",
        "https://acme/rest/",
    )


def test_the_bindings_are_ingests_events_the_update_and_the_uninstall() -> None:
    assert set(INGEST_EVENTS) == {*ITEM_EVENTS, *DEAL_EVENTS, *UPDATE_EVENTS}
    wanted = wanted_bindings("https://nps/webhooks/bitrix24", "https://nps/app/events")
    assert wanted[-2:] == [
        Binding("ONAPPUPDATE", "https://nps/app/events"),
        Binding("ONAPPUNINSTALL", "https://nps/app/events"),
    ]
    assert {b.handler for b in wanted[:-2]} == {"https://nps/webhooks/bitrix24"}


def test_offline_intake_binds_ingests_events_offline() -> None:
    wanted = wanted_bindings(
        "https://nps/webhooks/bitrix24", "https://nps/app/events", offline=True
    )
    assert wanted[-1] == Binding("ONAPPUNINSTALL", "https://nps/app/events")
    assert wanted[-2] == Binding("ONAPPUPDATE", "https://nps/app/events")
    assert {b.handler for b in wanted[:-2]} == {None}
    assert [b.event for b in wanted[:-2]] == list(INGEST_EVENTS)
    assert wanted[0].params() == {"event": INGEST_EVENTS[0], "event_type": "offline"}
    assert wanted[-1].params() == {"event": "ONAPPUNINSTALL", "handler": "https://nps/app/events"}


@pytest.mark.parametrize(
    ("bound", "missing"),
    [
        ([], ["ONCRMDEALADD", "ONAPPUNINSTALL"]),
        ([{"event": "onCrmDealAdd", "connector_id": "", "offline": 1}], ["ONAPPUNINSTALL"]),
        ([{"event": "ONCRMDEALADD", "connector_id": "", "offline": "1"}], ["ONAPPUNINSTALL"]),
        (
            [{"event": "ONCRMDEALADD", "handler": "https://i/h", "offline": 0}],
            ["ONCRMDEALADD", "ONAPPUNINSTALL"],
        ),
        (
            [
                {"event": "ONCRMDEALADD", "connector_id": "", "offline": 1},
                {"event": "ONAPPUNINSTALL", "handler": "https://a/e", "offline": 0},
            ],
            [],
        ),
    ],
)
def test_missing_offline_bindings(bound: list[Any], missing: list[str]) -> None:
    wanted = [Binding("ONCRMDEALADD", None), Binding("ONAPPUNINSTALL", "https://a/e")]
    assert [b.event for b in missing_bindings(wanted, bound)] == missing


@pytest.mark.parametrize(
    ("bound", "missing"),
    [
        ([], ["ONCRMDEALADD", "ONAPPUNINSTALL"]),
        ([{"event": "onCrmDealAdd", "handler": "https://i/h"}], ["ONAPPUNINSTALL"]),
        (
            [{"event": "ONCRMDEALADD", "handler": "https://elsewhere/h"}],
            ["ONCRMDEALADD", "ONAPPUNINSTALL"],
        ),
        (
            [{"event": "ONCRMDEALADD", "connector_id": "c", "offline": 1}],
            ["ONCRMDEALADD", "ONAPPUNINSTALL"],
        ),
        (
            [
                {"event": "ONCRMDEALADD", "handler": "https://i/h"},
                {"event": "ONAPPUNINSTALL", "handler": "https://a/e"},
                "junk",
            ],
            [],
        ),
    ],
)
def test_missing_bindings(bound: list[Any], missing: list[str]) -> None:
    wanted = [Binding("ONCRMDEALADD", "https://i/h"), Binding("ONAPPUNINSTALL", "https://a/e")]
    assert [b.event for b in missing_bindings(wanted, bound)] == missing
