"""`--portal` in application mode (`shared/chosen_portal.py`): an installed portal by member id
or domain; none, an unknown value or a portal no longer installed is an error naming the value
and the installed portals."""

from __future__ import annotations

import pytest

from shared.bitrix24.tokens import AppPortal
from shared.chosen_portal import PortalChoiceError, resolve_installed


def portal(member_id: str, domain: str, status: str = "installed") -> AppPortal:
    return AppPortal(
        member_id=member_id,
        domain=domain,
        client_endpoint=f"https://{domain}/rest/",
        status=status,
        scope="crm",
        access_token=None,
        refresh_token=None,
        expires_at=None,
        application_token=None,
    )


PORTALS = [
    portal("a1", "alpha.bitrix24.ru"),
    portal("b2", "beta.bitrix24.ru"),
    portal("c3", "gamma.bitrix24.ru", "uninstalled"),
]
INSTALLED = "installed: a1 (alpha.bitrix24.ru), b2 (beta.bitrix24.ru)"


@pytest.mark.parametrize(
    ("chosen", "member_id"),
    [
        ("a1", "a1"),
        ("b2", "b2"),
        (" b2 ", "b2"),
        ("alpha.bitrix24.ru", "a1"),
        ("Beta.Bitrix24.RU", "b2"),
        ("https://beta.bitrix24.ru/", "b2"),
        ("http://alpha.bitrix24.ru", "a1"),
    ],
)
def test_an_installed_portal_by_member_id_or_domain(chosen: str, member_id: str) -> None:
    assert resolve_installed(chosen, PORTALS).member_id == member_id


def test_a_member_id_wins_over_a_domain_of_that_name() -> None:
    confusing = [portal("alpha.example", "other.example"), portal("x9", "alpha.example")]
    assert resolve_installed("alpha.example", confusing).member_id == "alpha.example"


@pytest.mark.parametrize(
    ("chosen", "message"),
    [
        (
            None,
            "--portal is required in application mode (NPS_MODE=app): expected the member id or"
            f" domain of an installed portal; {INSTALLED}",
        ),
        (
            "  ",
            "--portal is required in application mode (NPS_MODE=app): expected the member id or"
            f" domain of an installed portal; {INSTALLED}",
        ),
        (
            "delta.bitrix24.ru",
            "--portal 'delta.bitrix24.ru': no portal with that member id or domain; expected the"
            f" member id or domain of an installed portal; {INSTALLED}",
        ),
        (
            "gamma.bitrix24.ru",
            "--portal 'gamma.bitrix24.ru': portal c3 (gamma.bitrix24.ru) is uninstalled, not"
            f" installed; {INSTALLED}",
        ),
    ],
)
def test_no_unknown_or_uninstalled_portal_is_an_error_naming_the_installed(
    chosen: str | None, message: str
) -> None:
    with pytest.raises(PortalChoiceError) as raised:
        resolve_installed(chosen, PORTALS)
    assert str(raised.value) == message


def test_with_no_portal_installed_the_error_says_so() -> None:
    with pytest.raises(PortalChoiceError) as raised:
        resolve_installed("a1", [portal("a1", "alpha.bitrix24.ru", "revoked")])
    assert str(raised.value) == (
        "--portal 'a1': portal a1 (alpha.bitrix24.ru) is revoked, not installed; no portal has"
        " the application installed yet (docs/app.md)"
    )
