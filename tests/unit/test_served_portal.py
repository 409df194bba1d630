"""What `nps config check --portal` says about the portal a deployment serves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.served_portal import ServedPortal, describe

YAML = Path("config/portal.yaml")
LEARNED_AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("portal", "said"),
    [
        (
            None,
            "served portal: not known yet (portal.member_id is not set and no event has arrived);"
            " the portal of the first authenticated event will be kept. To pin it now, set"
            " portal.member_id in config/portal.yaml to the member_id of its events",
        ),
        (
            ServedPortal("m1"),
            "served portal: m1, pinned by portal.member_id in config/portal.yaml;"
            " events from any other portal are refused (403)",
        ),
        (
            ServedPortal("m1", "acme.bitrix24.com", LEARNED_AT),
            "served portal: m1 (acme.bitrix24.com), learned from its first event on"
            " 2026-03-04 05:06:07 UTC; events from any other portal are refused (403)."
            " To pin it, set portal.member_id: m1 in config/portal.yaml",
        ),
        (
            ServedPortal("m1", None, LEARNED_AT),
            "served portal: m1, learned from its first event on 2026-03-04 05:06:07 UTC;"
            " events from any other portal are refused (403)."
            " To pin it, set portal.member_id: m1 in config/portal.yaml",
        ),
    ],
    ids=["unknown", "pinned", "learned", "learned-without-domain"],
)
def test_describe(portal: ServedPortal | None, said: str) -> None:
    assert describe(portal, YAML) == said
