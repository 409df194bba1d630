"""Queuing statements: the builder numbers the placeholders, so a statement that would bind the
wrong values or queue nothing fails when it is built, and a call missing a parameter fails before
it reaches the database."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.events import PortalRef, WebhookReceived
from shared.outbox import OutboxUsageError, QueuingStatement, StatementBuilder


def _hand_numbered() -> QueuingStatement:
    b = StatementBuilder()
    item = b.param("item_id")
    return b.build(f"WITH done AS (SELECT {item}, $9 AS x), {b.queue()} SELECT 1")


def _unused() -> QueuingStatement:
    b = StatementBuilder()
    item, _portal = b.params("item_id", "portal")
    return b.build(f"WITH {b.queue()} SELECT {item}")


def _no_queue() -> QueuingStatement:
    b = StatementBuilder()
    b.queue()
    item = b.param("item_id")
    return b.build(f"SELECT {item}")


def _never_asked_for_queue() -> QueuingStatement:
    b = StatementBuilder()
    item = b.param("item_id")
    return b.build(f"SELECT {item}")


def _queue_twice_in_text() -> QueuingStatement:
    b = StatementBuilder()
    queue = b.queue()
    return b.build(f"WITH {queue}, {queue} SELECT 1")


def _asked_for_queue_twice() -> QueuingStatement:
    b = StatementBuilder()
    b.queue()
    return b.build(f"WITH {b.queue()} SELECT 1")


def _after_a_missing_cte() -> QueuingStatement:
    b = StatementBuilder()
    item = b.param("item_id")
    return b.build(f"WITH done AS (SELECT {item}), {b.queue(after='cause')} SELECT 1")


def _same_name_twice() -> QueuingStatement:
    b = StatementBuilder()
    first, second = b.params("item_id", "item_id")
    return b.build(f"WITH {b.queue()} SELECT {first}, {second}")


def _not_a_name() -> QueuingStatement:
    b = StatementBuilder()
    item = b.param("item id")
    return b.build(f"WITH {b.queue()} SELECT {item}")


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (_hand_numbered, r"\$9 used but not asked for"),
        (_unused, r"\$2 asked for but not used"),
        (_no_queue, r"queue\(\) CTE exactly once"),
        (_never_asked_for_queue, r"queue\(\) CTE exactly once"),
        (_queue_twice_in_text, r"queue\(\) CTE exactly once"),
        (_asked_for_queue_twice, r"queue\(\) asked for twice"),
        (_after_a_missing_cte, r"after='cause'.*no such CTE"),
        (_same_name_twice, r"'item_id' asked for twice"),
        (_not_a_name, r"'item id': expected a Python identifier"),
    ],
)
def test_a_statement_that_would_misbind_fails_when_built(
    build: Callable[[], QueuingStatement], error: str
) -> None:
    with pytest.raises(OutboxUsageError, match=error):
        build()


def _statement() -> QueuingStatement:
    """Parameters asked for before and after the events' placeholders."""
    b = StatementBuilder()
    item = b.param("item_id")
    queue = b.queue(after="done")
    portal = b.param("portal")
    return b.build(f"WITH done AS (SELECT {item}, {portal}), {queue} SELECT 1")


EVENT = WebhookReceived(
    correlation_id="c-1",
    portal=PortalRef(member_id="m"),
    source="event",
    event="ONCRMDYNAMICITEMADD",
    entity_type_id=1038,
    item_id=7,
)


def test_arguments_follow_the_placeholders_whatever_order_they_are_given_in() -> None:
    statement = _statement()
    assert "$1, $6" in statement.sql
    assert "unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[])" in statement.sql
    args = statement.args([EVENT], {"portal": "p.example", "item_id": 7})
    assert args[0] == 7
    assert args[1:5] == [[EVENT.event_id], ["webhook.received"], ["c-1"], [EVENT.model_dump_json()]]
    assert args[5] == "p.example"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"item_id": 7}, "missing portal, unknown none"),
        ({"item_id": 7, "portal": "p", "member": "m"}, "missing none, unknown member"),
        ({"item": 7, "portal": "p"}, "missing item_id, unknown item"),
    ],
)
def test_a_call_must_give_every_parameter_by_name_and_no_other(
    params: dict[str, object], error: str
) -> None:
    with pytest.raises(OutboxUsageError, match=error):
        _statement().args([EVENT], params)
