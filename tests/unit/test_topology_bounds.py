"""The queues nobody must let grow without end: the taps and the follow-up's update hints."""

import pytest

from shared.topology import (
    DISPATCH_UPDATES,
    DISPATCH_UPDATES_MAX,
    REGISTER_TAP,
    REGISTER_TAP_MAX,
    WRITTEN_TAP,
    WRITTEN_TAP_MAX,
    QueueSpec,
    queue_arguments,
)


@pytest.mark.parametrize(
    ("spec", "bound"),
    [
        (DISPATCH_UPDATES, DISPATCH_UPDATES_MAX),
        (REGISTER_TAP, REGISTER_TAP_MAX),
        (WRITTEN_TAP, WRITTEN_TAP_MAX),
    ],
)
def test_a_bounded_queue_drops_its_oldest(spec: QueueSpec, bound: int) -> None:
    arguments = queue_arguments(spec)
    assert (arguments["x-max-length"], arguments["x-overflow"]) == (bound, "drop-head")
