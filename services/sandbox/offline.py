"""The offline event queue of one application on one portal (pure), as Bitrix24's
``b_rest_event_offline`` table behaves (``event.offline.*``, module rest, ``EventOfflineTable``).

- A record's key is its ``MESSAGE_ID``: md5 of ``EVENT_NAME|json(EVENT_DATA)``. A repeat updates
  the *unreserved* record with the same key (its time and data), so the queue keeps one record
  per object; when that record is reserved by a batch the repeat adds a new record.
- ``event.offline.get`` without ``process_id`` reserves up to ``limit`` unreserved records under
  a new process id; with one it re-reads that batch. With ``clear=1`` (the default) it then
  deletes the *whole* batch, records cut off by ``limit`` included.
- ``event.offline.clear`` deletes a batch's records (all, or by ``id`` or ``MESSAGE_ID``).
- ``event.offline.error`` marks a batch's records erroneous and releases them (``error=1``
  reads them); other unmarked copies of those messages are deleted.
- Reserved records older than ``RESERVATION_LIFETIME_S`` are dropped (Bitrix24's clean-up
  agent).

Every operation is scoped to a source key (``auth_connector``, ``""`` for none).
"""

import hashlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.sandbox.timing import iso

RESERVATION_LIFETIME_S = 2_952_000
"""``EventOfflineTable::PROCESS_ID_LIFETIME`` (its comment says 30 days; the value is ~34)."""
LIST_PAGE = 50

GET_FIELDS = ("ID", "TIMESTAMP_X", "EVENT_NAME", "MESSAGE_ID")
LIST_FIELDS = (*GET_FIELDS, "PROCESS_ID", "ERROR")
OPERATIONS = ("", "=", ">", "<", ">=", "<=")
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


class OfflineError(ValueError):
    """A bad argument: answered as 400 ``ERROR_ARGUMENT`` with this message."""

    def __init__(self, message: str, argument: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.argument = argument


class OfflineRecord(BaseModel):
    id: int
    timestamp: float
    event_name: str
    event_data: Any
    event_additional: dict[str, Any] = Field(default_factory=dict)
    message_id: str
    process_id: str = ""
    connector: str = ""
    error: int = 0

    def value(self, field: str) -> Any:
        return {
            "ID": self.id,
            "TIMESTAMP_X": self.timestamp,
            "EVENT_NAME": self.event_name,
            "MESSAGE_ID": self.message_id,
            "PROCESS_ID": self.process_id,
            "ERROR": self.error,
        }[field]

    def render(self, *, full: bool = False) -> dict[str, Any]:
        """As ``event.offline.get`` returns it (``full``: as ``event.offline.list``)."""
        row: dict[str, Any] = {
            "ID": str(self.id),
            "TIMESTAMP_X": iso(self.timestamp),
            "EVENT_NAME": self.event_name,
            "EVENT_DATA": self.event_data,
            "EVENT_ADDITIONAL": self.event_additional or False,
            "MESSAGE_ID": self.message_id,
        }
        if full:
            row["PROCESS_ID"] = self.process_id
            row["ERROR"] = str(self.error)
        return row


Condition = tuple[str, str, Any]
"""(operation, field, value) of a filter."""


class OfflineQueue(BaseModel):
    records: list[OfflineRecord] = Field(default_factory=list)
    last_id: int = 0

    # --- writing --------------------------------------------------------------------------

    def push(
        self,
        event_name: str,
        data: Any,
        *,
        user_id: int,
        connector: str,
        now: float,
    ) -> OfflineRecord:
        """Queue an event: update the unreserved record with the same message, else add one."""
        message = message_id(event_name, data)
        additional = {"user_id": str(user_id)}
        for record in self.records:
            if (record.message_id, record.connector, record.process_id) == (
                message,
                connector,
                "",
            ):
                record.timestamp = now
                record.event_data = data
                record.event_additional = additional
                return record
        self.last_id += 1
        record = OfflineRecord(
            id=self.last_id,
            timestamp=now,
            event_name=event_name,
            event_data=data,
            event_additional=additional,
            message_id=message,
            connector=connector,
        )
        self.records.append(record)
        return record

    # --- event.offline.get ----------------------------------------------------------------

    def get(
        self,
        *,
        conditions: Sequence[Condition],
        order: Sequence[tuple[str, bool]],
        limit: int,
        clear: bool,
        process_id: str | None,
        connector: str,
        error: bool,
        new_process_id: Callable[[], str],
    ) -> tuple[str | None, list[OfflineRecord]]:
        """Reserve (or re-read) a batch and return (its process id when shown, its records)."""
        if limit <= 0:
            raise OfflineError("Value must be positive integer", "LIMIT")
        flag = 1 if error else 0
        shown = not clear
        if process_id is None:
            process_id = new_process_id()
            free = self._select(conditions, order, connector, flag, process="")
            for record in free[:limit]:
                record.process_id = process_id
        else:
            shown = True
        batch = self._select(conditions, order, connector, flag, process=process_id)[:limit]
        if clear and batch:
            self.clear(process_id, connector)
        return (process_id if shown else None), batch

    # --- event.offline.clear / error --------------------------------------------------------

    def clear(
        self,
        process_id: str,
        connector: str,
        *,
        ids: Sequence[int] | None = None,
        message_ids: Sequence[str] | None = None,
    ) -> int:
        """Delete a batch's records: those with ``ids``, else those with ``message_ids``,
        else all. Returns how many went."""

        def goes(record: OfflineRecord) -> bool:
            if (record.process_id, record.connector) != (process_id, connector):
                return False
            if ids is not None:
                return record.id in ids
            if message_ids is not None:
                return record.message_id in message_ids
            return True

        kept = [record for record in self.records if not goes(record)]
        removed = len(self.records) - len(kept)
        self.records = kept
        return removed

    def mark_error(self, process_id: str, connector: str, message_ids: Sequence[str]) -> None:
        """The batch's records of ``message_ids`` become erroneous and unreserved; unmarked
        copies of those messages elsewhere (unreserved or in other batches) are deleted."""
        wanted = set(message_ids)

        def duplicate(record: OfflineRecord) -> bool:
            return (
                record.message_id in wanted
                and record.connector == connector
                and record.error == 0
                and record.process_id != process_id
            )

        self.records = [record for record in self.records if not duplicate(record)]
        for record in self.records:
            if (
                record.message_id in wanted
                and record.connector == connector
                and record.error == 0
                and record.process_id == process_id
            ):
                record.error = 1
                record.process_id = ""

    # --- event.offline.list -----------------------------------------------------------------

    def listing(
        self,
        *,
        conditions: Sequence[Condition],
        order: Sequence[tuple[str, bool]],
        connector: str,
        start: int,
    ) -> tuple[list[OfflineRecord], int, int | None]:
        """A page of every record (reserved or not) and the total and next start."""
        chosen = [
            record
            for record in _ordered(self.records, order or [("ID", False)])
            if record.connector == connector and _matches(record, conditions)
        ]
        page = chosen[start : start + LIST_PAGE]
        following = start + LIST_PAGE
        return page, len(chosen), following if following < len(chosen) else None

    # --- housekeeping -----------------------------------------------------------------------

    def expire(self, now: float, lifetime_s: float = RESERVATION_LIFETIME_S) -> int:
        """Drop reserved records last touched more than ``lifetime_s`` ago."""
        kept = [r for r in self.records if not (r.process_id and r.timestamp < now - lifetime_s)]
        removed = len(self.records) - len(kept)
        self.records = kept
        return removed

    def _select(
        self,
        conditions: Sequence[Condition],
        order: Sequence[tuple[str, bool]],
        connector: str,
        error: int,
        *,
        process: str,
    ) -> list[OfflineRecord]:
        return [
            record
            for record in _ordered(self.records, order)
            if (record.connector, record.error, record.process_id) == (connector, error, process)
            and _matches(record, conditions)
        ]


def message_id(event_name: str, data: Any) -> str:
    """``md5(EVENT_NAME|json(EVENT_DATA))``, as the portal keys a queued event."""
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return hashlib.md5(f"{event_name}|{encoded}".encode(), usedforsecurity=False).hexdigest()


def parse_filter(raw: Any, fields: Sequence[str] = GET_FIELDS) -> list[Condition]:
    """``{">=ID": 5, "=EVENT_NAME": "ONCRMDEALADD", "MESSAGE_ID": "…"}``: an operation before
    the field (none: equality), a string or number value."""
    if raw in (None, "", []):
        return []
    if not isinstance(raw, Mapping):
        raise OfflineError("The filter is not an array.", "filter")
    conditions: list[Condition] = []
    for key, value in raw.items():
        text = str(key)
        field = text.lstrip("=<>!%@?~")
        operation = text[: len(text) - len(field)]
        field = field.upper()
        if operation not in OPERATIONS:
            raise OfflineError(f"Filter operation not allowed: {operation}", "filter")
        if field not in fields:
            raise OfflineError(f"Filter field not allowed: {field}", "filter")
        if isinstance(value, Mapping | list):
            raise OfflineError(f"The value of an argument '{text}' has an invalid type", text)
        conditions.append((operation or "=", field, _comparable(field, value)))
    return conditions


def parse_order(
    raw: Any, fields: Sequence[str] = GET_FIELDS, default: str = "TIMESTAMP_X"
) -> list[tuple[str, bool]]:
    """``{"ID": "DESC"}`` as (field, descending) pairs; the default order when none."""
    if raw in (None, "", []):
        return [(default, False)]
    if not isinstance(raw, Mapping):
        raise OfflineError("The order is not an array.", "order")
    order = []
    for key, direction in raw.items():
        field = str(key).upper()
        if field not in fields:
            raise OfflineError(f"Order field not allowed: {field}", "order")
        word = str(direction).upper()
        if word not in ("ASC", "DESC"):
            raise OfflineError("Order direction should be one of {ASC|DESC}", "order")
        order.append((field, word == "DESC"))
    return order


def _comparable(field: str, value: Any) -> Any:
    if field in ("ID", "ERROR"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise OfflineError(f"{field}: expected an integer, got {value!r}", field) from None
    if field == "TIMESTAMP_X":
        try:
            return datetime.fromisoformat(str(value)).timestamp()
        except ValueError:
            raise OfflineError(
                f"TIMESTAMP_X: expected an ISO 8601 date and time, got {value!r}", field
            ) from None
    return str(value)


def _matches(record: OfflineRecord, conditions: Sequence[Condition]) -> bool:
    return all(
        COMPARE[operation](record.value(field), wanted) for operation, field, wanted in conditions
    )


def _ordered(
    records: Sequence[OfflineRecord], order: Sequence[tuple[str, bool]]
) -> list[OfflineRecord]:
    """Sorted by ``order``, ties by ID (the database's order there is the sandbox's choice)."""
    result = sorted(records, key=lambda record: record.id)
    for field, descending in reversed(order):
        result.sort(key=lambda record: record.value(field), reverse=descending)
    return result
