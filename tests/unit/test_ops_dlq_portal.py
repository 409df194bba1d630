"""The portal a dead letter names (`services/ops/dlq.py`, `portal_of`): recorded with its
discard, so a discard is known per portal."""

from __future__ import annotations

from typing import Any

import pytest

from services.ops.dlq import portal_of


@pytest.mark.parametrize(
    ("body", "portal"),
    [
        ({"portal": {"member_id": "m-alpha", "domain": "a.bitrix24.ru"}}, "m-alpha"),
        ({"portal": {"member_id": None, "domain": "a.bitrix24.ru"}}, "a.bitrix24.ru"),
        ({"portal": {}}, "default"),
        ({"answer": {"portal": {"member_id": "m-beta"}}, "action": "service"}, "m-beta"),
        ({"action_id": "x", "outcome": "created"}, None),  # crm.written names no portal
        ({"portal": "m-alpha"}, None),
        ({"portal": {"member_id": 7}}, None),
        ({"portal": {"member_id": "", "domain": "a.bitrix24.ru"}}, "a.bitrix24.ru"),
        (["not", "an", "object"], None),
        ("not json at all", None),
    ],
)
def test_portal_of(body: Any, portal: str | None) -> None:
    assert portal_of(body) == portal
