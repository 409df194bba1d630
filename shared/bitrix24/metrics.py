"""Prometheus metrics of the Bitrix24 client and the shared rate budget."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.bitrix24.errors import (
    NotFound,
    OperationTimeLimit,
    PortalUnavailable,
    RateLimited,
)

REQUESTS = Counter(
    "nps_bitrix24_requests_total",
    "HTTP requests to the Bitrix24 portal, by method and outcome",
    ["method", "outcome"],
)
COMMANDS = Counter(
    "nps_bitrix24_batch_commands_total",
    "Commands sent inside batch calls, by method and outcome",
    ["method", "outcome"],
)
LIMIT_ERRORS = Counter(
    "nps_bitrix24_limit_errors_total",
    "Limit errors answered by the portal (QUERY_LIMIT_EXCEEDED, OPERATION_TIME_LIMIT)",
    ["code"],
)
PARKS = Counter(
    "nps_bitrix24_method_parks_total",
    "Methods parked for the operating-time limit: after a 429 or before the portal blocks them",
    ["method", "reason"],
)
BUCKET_WAIT = Histogram(
    "nps_bitrix24_bucket_wait_seconds",
    "Time a request waited for the portal's shared rate budget",
    ["portal"],
    buckets=(0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
LANE_REQUESTS = Counter(
    "nps_bitrix24_lane_requests_total",
    "Requests counted in the portal's shared rate budget, by lane (urgent, bulk): the lanes'"
    " shares of the budget",
    ["portal", "lane"],
)
LANE_WAIT = Histogram(
    "nps_bitrix24_lane_wait_seconds",
    "Time a request waited for the portal's shared rate budget, by lane (urgent, bulk)",
    ["portal", "lane"],
    buckets=(0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
BUCKET_LEVEL = Gauge(
    "nps_bitrix24_bucket_level",
    "Level of the portal's shared leaky bucket after this process's last request",
    ["portal"],
)

_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (RateLimited, "rate_limited"),
    (OperationTimeLimit, "operation_time_limit"),
    (PortalUnavailable, "unavailable"),
    (NotFound, "not_found"),
)


def outcome(error: BaseException | None) -> str:
    """The `outcome` label for a request or command that ended with `error` (None = success)."""
    if error is None:
        return "ok"
    return next((label for kind, label in _OUTCOMES if isinstance(error, kind)), "error")
