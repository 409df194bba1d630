"""What the portal YAML tells the dashboard: the portal's time zone, the contact fields' titles,
the comment themes and dispatch's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from services.reports.main import portal_dispatch, portal_display
from shared.dispatch_config import Dispatch
from shared.portal_config import (
    ConfigError,
    PortalConfig,
    contact_field_titles,
    parse_portal_config,
)
from shared.settings import Settings


def with_portal(portal_config: PortalConfig, **portal: Any) -> dict[str, Any]:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["portal"].update(portal)
    return data


def test_the_time_zone_is_utc_unless_set(portal_config: PortalConfig) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["portal"].pop("timezone", None)
    assert parse_portal_config(data).portal.timezone == "UTC"


@pytest.mark.parametrize("zone", ["UTC", "Europe/Moscow", "Asia/Yekaterinburg", "America/New_York"])
def test_a_known_time_zone_loads(portal_config: PortalConfig, zone: str) -> None:
    assert parse_portal_config(with_portal(portal_config, timezone=zone)).portal.timezone == zone


@pytest.mark.parametrize("zone", ["Mars/Olympus", "MSK+3", "", "../etc/passwd"])
def test_an_unknown_time_zone_is_named(portal_config: PortalConfig, zone: str) -> None:
    with pytest.raises(ConfigError, match=r"portal\.timezone: .*unknown time zone"):
        parse_portal_config(with_portal(portal_config, timezone=zone))


def test_contact_fields_are_titled_by_segment_and_role(portal_config: PortalConfig) -> None:
    assert contact_field_titles(portal_config) == {
        "UF_CRM_NPS_LASER_A": "Laser A: NPS score",
        "UF_CRM_NPS_LASER_A_DATE": "Laser A: NPS date",
        "UF_CRM_NPS_CRYO_B": "Cryo B: NPS score",
        "UF_CRM_NPS_CRYO_B_DATE": "Cryo B: NPS date",
        "UF_CRM_NPS_HISTORY": "NPS history",
    }


def test_a_segment_without_a_name_is_titled_by_its_product(portal_config: PortalConfig) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    laser = next(s for s in data["survey"]["segments"] if s["category_id"] == 12)
    laser.pop("name")
    laser["product"]["name"] = "Laser A 2021"
    assert contact_field_titles(parse_portal_config(data))["UF_CRM_NPS_LASER_A"] == (
        "Laser A 2021: NPS score"
    )


def test_the_dashboard_takes_zone_titles_and_themes_from_the_portal_yaml(
    tmp_path: Path, portal_config: PortalConfig
) -> None:
    path = tmp_path / "portal.yaml"
    data = with_portal(portal_config, timezone="Europe/Moscow")
    data["themes"] = {"price": {"ru": ["дорог"], "en": ["expensive", "price"]}}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    real = SecretStr("https://acme.bitrix24.ru/rest/1/x/")
    zone, titles, themes = portal_display(Settings(nps_config=path, bitrix24_webhook_url=real))
    assert (zone, titles["UF_CRM_NPS_LASER_A"]) == ("Europe/Moscow", "Laser A: NPS score")
    assert themes == {"price": ("дорог", "expensive", "price")}
    assert portal_display(
        Settings(nps_config=tmp_path / "none.yaml", bitrix24_webhook_url=real)
    ) == ("UTC", {}, {})
    path.write_text("portal: {timezone: Mars/Olympus}\n")
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        portal_display(Settings(nps_config=path, bitrix24_webhook_url=real))


def test_the_dashboard_takes_dispatchs_settings_from_the_portal_yaml(
    tmp_path: Path, portal_config: PortalConfig
) -> None:
    path = tmp_path / "portal.yaml"
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["dispatch"] = {
        "email": {"sender": "nps@example.com"},
        "reminders": {"after_days": [2, 5]},
        "unanswered": {"after_days": 4, "task": False},
    }
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    real = SecretStr("https://acme.bitrix24.ru/rest/1/x/")
    dispatch = portal_dispatch(Settings(nps_config=path, bitrix24_webhook_url=real))
    assert dispatch.reminders.after_days == (2, 5)
    assert (dispatch.unanswered.after_days, dispatch.unanswered.task) == (4, False)
    del data["dispatch"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert portal_dispatch(Settings(nps_config=path, bitrix24_webhook_url=real)) == Dispatch()
    missing = Settings(nps_config=tmp_path / "none.yaml", bitrix24_webhook_url=real)
    assert portal_dispatch(missing) == Dispatch()
