"""`rule_consumer()`: the queue it declares and the mistakes it refuses."""

from __future__ import annotations

import pytest

from services.router.integration import rule_consumer
from shared.events import CrmWritten, NpsScored, RouteAction


async def ignore(_event: NpsScored) -> None:
    return None


async def ignore_action(_event: RouteAction) -> None:
    return None


def test_a_consumer_gets_a_queue_of_its_own() -> None:
    consumer = rule_consumer("alerts", "nps.scored.equipment.detractor", NpsScored, ignore)
    assert consumer.queue.name == "alerts"
    assert consumer.queue.bindings == ("nps.scored.equipment.detractor",)
    assert consumer.queue.dlq == "alerts.dlq"


def test_several_bindings() -> None:
    consumer = rule_consumer(
        "alerts", ["nps.scored.*.detractor", "nps.scored.equipment.#"], NpsScored, ignore
    )
    assert consumer.queue.bindings == ("nps.scored.*.detractor", "nps.scored.equipment.#")


@pytest.mark.parametrize(
    ("name", "bindings", "model", "message"),
    [
        (
            "alerts",
            "route.telegram",
            NpsScored,
            "binding 'route.telegram' does not carry NpsScored",
        ),
        ("alerts", "#", NpsScored, "their routing keys start with 'nps.scored'"),
        ("alerts", "nps.scored.equipment.detractor", RouteAction, "does not carry RouteAction"),
        ("alerts", "crm.written", CrmWritten, None),
        ("alerts", "route.telegram", RouteAction, None),
        ("alerts", [], NpsScored, "give at least one binding"),
        ("Alerts", "nps.scored.#", NpsScored, "queue name 'Alerts'"),
        ("alerts.dlq", "nps.scored.#", NpsScored, "not the .dlq suffix"),
        ("router.scored", "nps.scored.#", NpsScored, "belongs to the core pipeline"),
    ],
)
def test_bindings_must_carry_the_model(
    name: str, bindings: str | list[str], model: type, message: str | None
) -> None:
    handler = ignore_action if model is RouteAction else ignore
    if message is None:
        assert rule_consumer(name, bindings, model, handler).model is model
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        rule_consumer(name, bindings, model, handler)
