"""Whose NPS an answer is when `survey.manager: contact`: the responsible (`ASSIGNED_BY_ID`) of
the answer's contact, read with `crm.contact.list` (`@ID` filter) through the portal's shared
rate budget. Like the item reads (the same `BatchReader`), the look-ups of one moment share one
call (up to 50 ids), and those made while the portal stalls share the next one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.ingest.batching import BatchReader
from shared.logging import get_logger

CONTACT_ENTITY_TYPE_ID = 3
"""Bitrix24's entity type id of contacts, the key contacts are read by."""

log = get_logger(__name__)


class ContactManagers(BatchReader[int, int | None]):
    """Reads the responsible user of contacts by id, packing concurrent look-ups into one call."""

    async def responsible(self, contact_id: int) -> int | None:
        """The contact's `ASSIGNED_BY_ID`; None when the contact does not exist (any more) or
        has no responsible."""
        return await self.get(CONTACT_ENTITY_TYPE_ID, contact_id)

    async def read(self, key: int, ids: Sequence[int]) -> dict[int, int | None]:
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
