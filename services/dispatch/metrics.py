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
FOLLOWUP_READS = Counter(
    "nps_dispatch_followup_reads",
    "Follow-up reads of a lead's or task's state: read, failed (the portal could not be"
    " read: tried again after the lease) or superseded (its lease ended and a newer read claimed"
    " the row: not applied)",
    ["outcome"],
)
ESCALATIONS = Counter(
    "nps_dispatch_escalations",
    "Escalations of overdue follow-ups: queued (a task command for crm_sync), created, failed"
    " (crm_sync could not create it) or skipped (off, nobody to escalate to, nothing to bind to)",
    ["outcome"],
)
FOLLOWUP_UPDATES = Counter(
    "nps_dispatch_followup_updates",
    "The portal's lead and task update events: read_now (a followed one, read at the timer's next"
    " round) or not_followed (not followed, or no longer read)",
    ["outcome"],
)
