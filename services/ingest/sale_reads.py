"""What ingest reads from the portal about a sale, besides the deal itself (docs/ingest.md, Sales
closed):

- `FunnelCatalog`: a deal category's stages (`crm.status.list`, `ENTITY_ID` `DEAL_STAGE` or
  `DEAL_STAGE_<id>`), read once per category and kept; read again when a deal names a stage the
  kept ones lack (a stage added since), at most once a `STAGES_REFRESH_S`.
- `ProductRowReader`: a deal's product rows (`crm.item.productrow.list`, filter `=ownerType` "D"
  and `=ownerId`), one command per deal, the deals of concurrent messages packed into one `batch`
  request (a `BatchReader`: up to 50, stall-safe, within the portal's budget).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from services.ingest.batching import BatchReader
from shared.bitrix24 import Bitrix24Client, Bitrix24Error
from shared.bitrix24.client import Command
from shared.bitrix24.errors import TransientBitrix24Error
from shared.deal_stages import Funnel, read_funnel, status_entity_id

STAGES_REFRESH_S = 60.0
PRODUCT_ROWS = "crm.item.productrow.list"
DEAL_OWNER_TYPE = "D"
"""The deal's short symbolic type code, as product rows name their owner."""

ProductRows = tuple[Mapping[str, Any], ...]


class FunnelCatalog:
    """Deal categories' stages, read with `crm.status.list` and kept per category."""

    def __init__(self, client: Bitrix24Client, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._cache: dict[int, tuple[float, Funnel]] = {}
        self._lock = asyncio.Lock()

    async def funnel(self, category_id: int) -> Funnel:
        """The category's stages, read once and then served from the cache."""
        async with self._lock:
            cached = self._cache.get(category_id)
            return cached[1] if cached is not None else await self._read(category_id)

    async def refresh(self, category_id: int) -> Funnel | None:
        """Read the stages again (a deal named a stage the kept ones lack); None when they were
        read less than `STAGES_REFRESH_S` ago, so a burst of such deals cannot hammer the
        portal."""
        async with self._lock:
            cached = self._cache.get(category_id)
            if cached is not None and self._clock() - cached[0] < STAGES_REFRESH_S:
                return None
            return await self._read(category_id)

    async def _read(self, category_id: int) -> Funnel:
        response = await self._client.call(
            "crm.status.list", {"filter": {"ENTITY_ID": status_entity_id(category_id)}}
        )
        rows = response.result if isinstance(response.result, list) else []
        funnel = read_funnel(category_id, rows)
        self._cache[category_id] = (self._clock(), funnel)
        return funnel


class ProductRowReader(BatchReader[str, ProductRows | Bitrix24Error]):
    """Product rows by owner type and owner id, the deals of concurrent messages in one `batch`
    request. A command that fails fails its own deal only."""

    async def rows(self, deal_id: int) -> ProductRows:
        """The deal's product rows (none: an empty tuple); raises the portal's error."""
        found = await self.get(DEAL_OWNER_TYPE, deal_id)
        if isinstance(found, Bitrix24Error):
            raise found
        return found or ()

    async def read(self, key: str, ids: Sequence[int]) -> dict[int, ProductRows | Bitrix24Error]:
        reply = await self._client.batch(
            [Command(f"d{owner}", PRODUCT_ROWS, _params(key, owner)) for owner in ids]
        )
        found: dict[int, ProductRows | Bitrix24Error] = {}
        for owner in ids:
            name = f"d{owner}"
            if name in reply.errors:
                found[owner] = reply.errors[name]
            elif name not in reply.results:
                found[owner] = TransientBitrix24Error(
                    PRODUCT_ROWS, "NO_RESULT", "the batch gave no result for the command", None
                )
            else:
                found[owner] = await self._all(
                    key, owner, _product_rows(reply.results[name]), reply.nexts.get(name)
                )
        return found

    async def _all(
        self, key: str, owner: int, rows: list[Mapping[str, Any]], start: int | None
    ) -> ProductRows:
        """The rows of a deal with more than one page of them (more than 50), page by page."""
        while start is not None:
            page = await self._client.call(PRODUCT_ROWS, {**_params(key, owner), "start": start})
            more = _product_rows(page.result)
            rows.extend(more)
            start = page.next if more else None
        return tuple(rows)


def _params(owner_type: str, owner_id: int) -> dict[str, Any]:
    return {"filter": {"=ownerType": owner_type, "=ownerId": owner_id}}


def _product_rows(result: Any) -> list[Mapping[str, Any]]:
    rows = result.get("productRows") if isinstance(result, Mapping) else None
    return [row for row in rows or [] if isinstance(row, Mapping)]
