"""`crossed` of a run on several portals: a lead or task in one portal made for another portal's
action or naming its records, and rows recorded under one portal naming another's records."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.harness.crossing import Created, PortalFacts, crossings

ITEMS_A = frozenset({(1038, 1_000_001), (2, 1_000_002)})
ITEMS_B = frozenset({(1038, 2_000_001), (2, 2_000_002)})
CONTACTS_A = frozenset({1_000_010})
CONTACTS_B = frozenset({2_000_010})


ALPHA = PortalFacts("alpha", items=ITEMS_A, contacts=CONTACTS_A, actions=frozenset({"a-1"}))
BETA = PortalFacts("beta", items=ITEMS_B, contacts=CONTACTS_B, actions=frozenset({"b-1"}))


def alpha(**facts: Any) -> PortalFacts:
    return replace(ALPHA, **facts)


def beta(**facts: Any) -> PortalFacts:
    return replace(BETA, **facts)


CLEAN_A = alpha(
    created=(
        Created("lead", 1_000_100, origin="a-1", contact=1_000_010),
        Created("task", 1_000_101, origin="a-1", contact=1_000_010, deals=(1_000_002,)),
    ),
    scored=frozenset({(1038, 1_000_001), (2, 1_000_002)}),
    answer_contacts=CONTACTS_A,
    written_contacts=CONTACTS_A,
)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(CLEAN_A, beta(), [], id="each-its-own"),
        pytest.param(
            alpha(created=(Created("lead", 1_000_100, origin="b-1"),)),
            beta(),
            ["lead 1000100 in alpha for beta's action b-1"],
            id="lead-for-another-portals-action",
        ),
        pytest.param(
            alpha(),
            beta(created=(Created("task", 2_000_100, origin="a-1"),)),
            ["task 2000100 in beta for alpha's action a-1"],
            id="task-for-another-portals-action",
        ),
        pytest.param(
            alpha(created=(Created("lead", 1_000_100, contact=2_000_010),)),
            beta(),
            ["lead 1000100 in alpha names beta's contact 2000010"],
            id="lead-naming-another-portals-contact",
        ),
        pytest.param(
            alpha(created=(Created("task", 1_000_101, deals=(2_000_002, 1_000_002)),)),
            beta(),
            ["task 1000101 in alpha bound to beta's deal 2000002"],
            id="task-bound-to-another-portals-deal",
        ),
        pytest.param(
            alpha(scored=frozenset({(1038, 1_000_001), (1038, 2_000_001)})),
            beta(),
            ["alpha scored beta's item 1038/2000001"],
            id="item-scored-under-the-wrong-portal",
        ),
        pytest.param(
            alpha(answer_contacts=frozenset({2_000_010})),
            beta(),
            ["alpha's answer names beta's contact 2000010"],
            id="answer-naming-another-portals-contact",
        ),
        pytest.param(
            alpha(),
            beta(written_contacts=frozenset({1_000_010, 2_000_010})),
            ["beta's contact write on alpha's contact 1000010"],
            id="patch-on-another-portals-contact",
        ),
        pytest.param(
            alpha(created=(Created("lead", 1_000_100, origin="b-1", contact=2_000_010),)),
            beta(scored=frozenset({(2, 1_000_002)})),
            [
                "lead 1000100 in alpha for beta's action b-1",
                "lead 1000100 in alpha names beta's contact 2000010",
                "beta scored alpha's item 2/1000002",
            ],
            id="each-crossing-counted",
        ),
        pytest.param(
            alpha(created=(Created("lead", 1_000_100, origin="x-9", contact=3_000_010),)),
            beta(scored=frozenset({(1038, 3_000_001)})),
            [],
            id="unknown-records-are-not-crossings",
        ),
    ],
)
def test_crossings_name_both_portals(a: PortalFacts, b: PortalFacts, expected: list[str]) -> None:
    assert crossings([a, b]) == expected


def test_a_third_portal_is_compared_with_each_other() -> None:
    gamma = PortalFacts(
        "gamma",
        items=frozenset({(1038, 3_000_001)}),
        scored=frozenset({(1038, 2_000_001)}),
    )
    assert crossings([CLEAN_A, beta(), gamma]) == ["gamma scored beta's item 1038/2000001"]


def test_one_portal_crosses_nothing() -> None:
    assert crossings([alpha(created=(Created("lead", 1, origin="b-1"),))]) == []
