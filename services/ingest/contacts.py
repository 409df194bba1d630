"""Whose NPS an answer is when `survey.manager: contact`: the responsible (`ASSIGNED_BY_ID`) of
the answer's contact, read with `crm.contact.list` (`@ID` filter) through the portal's shared
rate budget. Like the item reads, the look-ups of one moment share one call (up to 50 ids)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from shared.bitrix24 import Bitrix24Client
from shared.logging import get_logger

PAGE_SIZE = 50
log = get_logger(__name__)


class ContactManagers:
    """Reads the responsible user of contacts by id, packing concurrent look-ups into one call."""

    def __init__(
        self, client: Bitrix24Client, *, window_s: float = 0.02, max_batch: int = PAGE_SIZE
    ) -> None:
        self._client = client
        self._window_s = window_s
        self._max_batch = max_batch
        self._pending: dict[int, list[asyncio.Future[int | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def responsible(self, contact_id: int) -> int | None:
        """The contact's `ASSIGNED_BY_ID`; None when the contact does not exist (any more) or
        has no responsible."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        opening = not self._pending
        self._pending.setdefault(contact_id, []).append(future)
        if len(self._pending) >= self._max_batch:
            self._start(self._flush())
        elif opening:
            self._start(self._flush_after())
        return await future

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_after(self) -> None:
        await asyncio.sleep(self._window_s)
        await self._flush()

    async def _flush(self) -> None:
        waiting, self._pending = self._pending, {}
        if not waiting:
            return
        try:
            found = await self._read(sorted(waiting))
        except asyncio.CancelledError:
            for futures in waiting.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for contact_id, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(contact_id))

    async def _read(self, ids: Sequence[int]) -> dict[int, int | None]:
        response = await self._client.call(
            "crm.contact.list",
            {"filter": {"@ID": list(ids)}, "select": ["ID", "ASSIGNED_BY_ID"], "start": -1},
        )
        found = responsibles(response.result)
        missing = sorted(set(ids) - found.keys())
        if missing:
            log.info("contacts_not_found", contacts=len(missing))
        return found


def responsibles(result: Any) -> dict[int, int | None]:
    """`crm.contact.list` rows as contact id → responsible user id (None when unset)."""
    rows = result if isinstance(result, list) else []
    found: dict[int, int | None] = {}
    for row in rows:
        if not isinstance(row, dict) or "ID" not in row:
            continue
        assigned = str(row.get("ASSIGNED_BY_ID") or "")
        found[int(row["ID"])] = int(assigned) if assigned.isdigit() and int(assigned) > 0 else None
    return found
