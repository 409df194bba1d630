"""What `nps demo` says the CRM got: actions count answers, legacy values count fields."""

from __future__ import annotations

import pytest

from services.ops.demo import crm_lines


@pytest.mark.parametrize(
    ("crm", "conflicts", "expected"),
    [
        (
            {"contact:conflict": 37, "contact:patched": 120, "service:created": 30},
            66,
            [
                "What the CRM got for these answers (actions: one per answer and kind):",
                "  contact    conflict      37  at least one field left alone (the others written)",
                "  contact    patched      120  every field it had to change written",
                "  service    created       30  created",
                "  legacy values left alone (nps conflicts): 66 contact field(s),"
                " in the 37 contact patch(es) with outcome conflict",
            ],
        ),
        (
            {"contact:patched": 4, "task:existing": 1},
            0,
            [
                "What the CRM got for these answers (actions: one per answer and kind):",
                "  contact    patched        4  every field it had to change written",
                "  task       existing       1  found already created (a retry), not created again",
                "  legacy values left alone (nps conflicts): 0 contact field(s)",
            ],
        ),
    ],
    ids=["conflicts", "none"],
)
def test_crm_lines_say_what_each_count_counts(
    crm: dict[str, int], conflicts: int, expected: list[str]
) -> None:
    assert crm_lines(crm, conflicts) == expected
