"""Clock type, the portal's time zone and the ``time`` block of every response."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

Clock = Callable[[], float]

PORTAL_TZ = timezone(timedelta(hours=3))
MIDNIGHT = "T00:00:00+03:00"  # how a date field reads back: midnight in PORTAL_TZ


def iso(ts: float) -> str:
    """Unix time as Bitrix24 writes dates: ``2024-07-22T18:00:08+03:00``."""
    return datetime.fromtimestamp(ts, PORTAL_TZ).isoformat(timespec="seconds")


@dataclass(frozen=True)
class OperatingStats:
    """Accumulated execution time of one method in the sliding window."""

    operating: float
    reset_at: int | None


def time_block(
    start: float, finish: float, processing: float, operating: OperatingStats | None
) -> dict[str, Any]:
    """The ``time`` object; ``operating`` fields only when the operating limiter is on."""
    block: dict[str, Any] = {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": processing,
        "date_start": iso(start),
        "date_finish": iso(finish),
    }
    if operating is not None:
        block["operating"] = operating.operating
        if operating.reset_at is not None:
            block["operating_reset_at"] = operating.reset_at
    return block
