"""Dispatch's metrics (served on `/metrics` with the process's others; the alert
`NpsSurveySendsFailing` reads them)."""

from __future__ import annotations

from prometheus_client import Counter

SENDS = Counter(
    "nps_dispatch_sends",
    "Survey messages by channel and outcome: sent, failed (for good, with the reason in the"
    " register) or deferred (the SMTP server or the portal unreachable: tried again)",
    ["channel", "outcome"],
)
REQUESTS = Counter(
    "nps_dispatch_requests",
    "Survey requests of the register by the state they entered",
    ["state"],
)
