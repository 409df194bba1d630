"""Offline events → what ingest stores, and when to pull next (pure: no I/O).

A portal the deployment cannot reach keeps ingest's events in its offline queue (the application
binds them with `event_type=offline`); the puller (`services/ingest/offline.py`) takes them with
`event.offline.get`. Each record (`ID`, `TIMESTAMP_X`, `EVENT_NAME`, `EVENT_DATA`, `MESSAGE_ID`)
is turned into the form an online event posts (`event`, `data`, `ts`, `auth[member_id]`,
`auth[domain]`) and read by the webhook's own `read_event`, so an offline event is accepted,
forwarded or ignored exactly like the same event posted online, with the same `WebhookReceived`
and the same duplicate key (portal, event, entity type, item, `ts` = `TIMESTAMP_X`). A record
that cannot be read is `Unreadable`: the puller reports it with `event.offline.error`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.ingest.webhook import Accepted, Ignored, RequestError, Updated, read_event
from shared.events import PortalRef
from shared.portal_config import PortalConfig

BATCH_LIMIT = 50
"""Records per `event.offline.get` (Bitrix24's default and the page size of its REST)."""


@dataclass(frozen=True)
class OfflineRecord:
    """One record of an `event.offline.get` answer."""

    id: str
    message_id: str
    event: str
    data: Any
    timestamp: str


@dataclass(frozen=True)
class Batch:
    """An `event.offline.get` answer: its process id (None when the portal names none) and
    records."""

    process_id: str | None
    records: list[OfflineRecord]


@dataclass(frozen=True)
class Unreadable:
    """A record ingest cannot take: reported with `event.offline.error` (by `message_id`)."""

    message_id: str
    reason: str


class BatchError(ValueError):
    """An `event.offline.get` answer of another shape than documented."""


def read_batch(result: object) -> Batch:
    """`{process_id, events: [...]}` → `Batch`; `BatchError` naming what is wrong."""
    if not isinstance(result, Mapping):
        raise BatchError("event.offline.get: expected {process_id, events}, got no object")
    raw_process = result.get("process_id")
    process_id = str(raw_process).strip() if raw_process not in (None, "", False) else None
    events = result.get("events")
    if events in (None, [], {}):
        return Batch(process_id, [])
    if not isinstance(events, list):
        raise BatchError("event.offline.get: events is not a list")
    return Batch(process_id, [_record(row) for row in events])


def _record(row: object) -> OfflineRecord:
    if not isinstance(row, Mapping):
        raise BatchError("event.offline.get: an event is not an object")
    return OfflineRecord(
        id=str(row.get("ID", "")),
        message_id=str(row.get("MESSAGE_ID") or ""),
        event=str(row.get("EVENT_NAME") or ""),
        data=row.get("EVENT_DATA"),
        timestamp=str(row.get("TIMESTAMP_X") or ""),
    )


def record_form(record: OfflineRecord, portal: PortalRef) -> dict[str, Any]:
    """The record as the form an online event of `portal` posts (without its tokens)."""
    auth = {key: value for key, value in portal.model_dump().items() if value is not None}
    form: dict[str, Any] = {"event": record.event, "data": as_form(record.data), "auth": auth}
    ts = _unix(record.timestamp)
    if ts is not None:
        form["ts"] = str(ts)
    return form


def as_form(value: Any) -> Any:
    """JSON values as a form-encoded body carries them: every scalar a string (`ID: 5` →
    `"5"`; null → `""`), lists as `{"0": …}` like `a[]=…`; objects kept nested."""
    if isinstance(value, Mapping):
        return {str(key): as_form(item) for key, item in value.items()}
    if isinstance(value, list):
        return {str(index): as_form(item) for index, item in enumerate(value)}
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)


def read_record(
    record: OfflineRecord, portal: PortalRef, config: PortalConfig
) -> Accepted | Updated | Ignored | Unreadable:
    """What ingest does with one offline record of `portal`: as `read_event` decides for the
    same event posted online; `Unreadable` (with the field and what was expected) otherwise."""
    if _unix(record.timestamp) is None:
        return Unreadable(
            record.message_id,
            f"TIMESTAMP_X is not a date and time: {record.timestamp!r} (expected ISO 8601)",
        )
    try:
        outcome = read_event(record_form(record, portal), config)
    except RequestError as exc:
        return Unreadable(record.message_id, f"{exc.field}: {exc.error} (expected {exc.expected})")
    if isinstance(outcome, Accepted):
        offline = {"id": record.id, "message_id": record.message_id}
        return dataclasses.replace(outcome, payload={**outcome.payload, "offline": offline})
    return outcome


def _unix(timestamp: str) -> int | None:
    """`TIMESTAMP_X` (`2024-07-22T18:00:08+03:00`) as Unix seconds; None when unreadable or
    without an offset (a local time names no instant)."""
    try:
        moment = datetime.fromisoformat(timestamp.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp())


Round = Literal["full", "some", "empty", "failed"]
"""How a pull went: a full batch (more may wait), some events, none, or an error."""


def round_of(events: int, limit: int = BATCH_LIMIT) -> Round:
    if events >= limit:
        return "full"
    return "some" if events else "empty"


def next_wait(outcome: Round, previous_s: float, base_s: float, max_s: float) -> float:
    """Seconds until the portal's next pull: at once after a full batch, `base_s` after a
    partial one, and after an empty queue or an error twice the previous wait (at least
    `base_s`), never more than `max_s`."""
    if outcome == "full":
        return 0.0
    if outcome == "some":
        return min(base_s, max_s)
    return min(max(base_s, previous_s * 2), max_s)


Refusal = Literal["webhook", "license", "rights", "other"]


def refusal(code: str) -> Refusal:
    """Why a portal refuses `event.offline.*` for good, from the error code: an inbound
    webhook's call (`WRONG_AUTH_TYPE`: offline events are an application's only), a plan
    without `rest_offline_extended` (`WRONG_LICENSE`: `clear=0` is refused), a token of a user
    who is no administrator (`ACCESS_DENIED`), or another reason."""
    return _REFUSAL_CODES.get(code.strip().upper(), "other")


_REFUSAL_CODES: dict[str, Refusal] = {
    "WRONG_AUTH_TYPE": "webhook",
    "WRONG_LICENSE": "license",
    "ACCESS_DENIED": "rights",
}


REFUSALS: dict[Refusal, str] = {
    "webhook": (
        "the portal answers event.offline.* only to the application (OAuth), never to an inbound"
        " webhook: INGEST_OFFLINE needs b24-nps installed as a Bitrix24 application (docs/app.md)"
    ),
    "license": (
        "the portal's plan lacks rest_offline_extended (feature.get), which reserving a batch"
        " (event.offline.get clear=0) needs: without it no event could be taken without loss"
    ),
    "rights": "event.offline.* needs the token of a portal administrator",
    "other": "the portal refused event.offline.get",
}


def unreadable_ids(outcomes: Sequence[Unreadable]) -> list[str]:
    """The `MESSAGE_ID`s to report with `event.offline.error` (a record without one cannot be
    named: it goes with the batch's clear)."""
    return sorted({outcome.message_id for outcome in outcomes if outcome.message_id})
