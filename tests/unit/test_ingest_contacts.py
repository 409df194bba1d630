"""Reading contacts' responsibles from `crm.contact.list` rows (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.contacts import responsibles


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ([{"ID": "1", "ASSIGNED_BY_ID": "41"}], {1: 41}),
        ([{"ID": 2, "ASSIGNED_BY_ID": 43}], {2: 43}),
        ([{"ID": "3", "ASSIGNED_BY_ID": None}], {3: None}),
        ([{"ID": "4", "ASSIGNED_BY_ID": ""}], {4: None}),
        ([{"ID": "5", "ASSIGNED_BY_ID": "0"}], {5: None}),
        ([{"ID": "6"}], {6: None}),
        ([{"ASSIGNED_BY_ID": "41"}, "junk"], {}),
        ({"error": "not a list"}, {}),
        (None, {}),
    ],
    ids=["text", "numbers", "null", "empty", "zero", "absent", "no-id", "not-a-list", "none"],
)
def test_responsibles(result: Any, expected: dict[int, int | None]) -> None:
    assert responsibles(result) == expected
