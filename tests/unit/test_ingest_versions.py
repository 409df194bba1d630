"""Which state of an item ingest publishes, and with which revision (`next_step`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.versions import Published, Step, next_step

T = datetime(2026, 3, 5, 10, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
LAST = Published(T, "b", 1)


@pytest.mark.parametrize(
    ("last", "updated_at", "fingerprint", "known", "reread", "expected"),
    [
        (None, T, "a", False, False, Step("new")),
        (None, T, "a", False, True, Step("new")),
        (LAST, T + SECOND, "c", False, False, Step("new")),
        (LAST, T - SECOND, "c", False, False, Step("stale")),
        (LAST, T, "b", True, False, Step("duplicate")),
        (LAST, T, "b", True, True, Step("duplicate")),
        # A tie: another state within the last one's second.
        (LAST, T, "c", False, False, Step("new", revision=2, reread=True)),
        # The read after a tie found another state again: the latest, with no further read.
        (LAST, T, "c", False, True, Step("new", revision=2)),
        (LAST, T, "a", True, True, Step("new", revision=2)),
        # An earlier state of the second again: only a fresh read can tell whether it is late.
        (LAST, T, "a", True, False, Step("duplicate", reread=True)),
    ],
)
def test_next_step(
    last: Published | None,
    updated_at: datetime,
    fingerprint: str,
    known: bool,
    reread: bool,
    expected: Step,
) -> None:
    assert next_step(last, updated_at, fingerprint, known=known, reread=reread) == expected
