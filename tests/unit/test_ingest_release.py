"""Which reloaded portal YAML ingest applies without a restart, and how it sees a file change."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.ingest.release import file_stamp, reload_refusal
from shared.portal_config import PortalConfig, parse_portal_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "portal.example.yaml"


def changed(**paths: Any) -> PortalConfig:
    """The example YAML with `section__key=value` changes."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for path, value in paths.items():
        section, key = path.split("__")
        data[section][key] = value
    return parse_portal_config(data)


NEW_SEGMENT = {
    "category_id": 16,
    "name": "Laser C",
    "kind": "equipment",
    "product": {"sku": "EQ-LASER-C", "name": "Laser C"},
    "score_field": "UF_CRM_5_SCORE",
}


@pytest.mark.parametrize(
    ("new", "refusal"),
    [
        ({}, None),
        ({"nps__scale": "1-10"}, None),
        ({"portal__plan": "enterprise"}, None),
        ({"survey__entity_type_id": 1040}, "survey.entity_type_id changed from 1038 to 1040"),
        ({"portal__member_id": "another"}, "portal.member_id changed"),
    ],
)
def test_a_reload_is_refused_only_for_what_the_endpoints_keep(
    portal_config: PortalConfig, new: dict[str, Any], refusal: str | None
) -> None:
    result = reload_refusal(portal_config, changed(**new))
    if refusal is None:
        assert result is None
    else:
        assert result is not None
        assert result.startswith(refusal)
        assert result.endswith("restart ingest to apply it")


def test_a_new_segment_is_applied(portal_config: PortalConfig) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["survey"]["segments"].append(NEW_SEGMENT)
    assert reload_refusal(portal_config, parse_portal_config(data)) is None


def test_the_stamp_changes_with_the_file_and_is_none_without_it(tmp_path: Path) -> None:
    path = tmp_path / "portal.yaml"
    assert file_stamp(path) is None
    path.write_text("a: 1\n", encoding="utf-8")
    first = file_stamp(path)
    path.write_text("a: 12\n", encoding="utf-8")
    assert first is not None
    assert file_stamp(path) not in (None, first)
