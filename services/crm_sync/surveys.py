"""Answers of the survey page (`survey.answered`, queue `crm_sync.surveys`) written into the
portal as smart-process items, exactly once per request (docs/survey.md, The answer's way).

The request's row in `crm_survey_items` holds its item and the answer's version last written.
Each message is handled under a lock on its request (in this process, and a session advisory
lock across replicas; a request another replica is writing is retried later), with no database
transaction open while the portal is asked: a version written already (a redelivery) or older
than the one written (a late message) writes nothing; a newer one updates the same item; the
first creates it, unless an earlier attempt created it without recording it (a timeout, a
crash): the item is looked up by its `XML_ID` first, in the same request as the contact's
responsible manager, who becomes the new item's responsible. The version written and its
`crm.written.survey` are then recorded in one short transaction. When the portal cannot be
reached nothing is recorded and the message is retried later through the delay tiers (then kept
in the DLQ for `nps dlq replay`): the answer waits, it is never lost.

A deal survey's answer (`deal_id` set) is written into its NPS deal the same way, versioned in
the same table (`item_id` is then the deal's id): each newer version updates the deal's score
and comment fields; a deal that no longer exists dead-letters the message.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.entities import ActionError
from services.crm_sync.locks import LockSession, WriterLocks
from services.crm_sync.survey_items import (
    contact_lookup,
    contact_responsible,
    deal_fields,
    entity_type_of,
    found_item,
    item_fields,
    item_lookup,
    list_values,
    survey_written,
    written_item_id,
)
from shared.bitrix24 import Command, NotFound
from shared.db import Conn
from shared.events import DEAL_ENTITY_TYPE_ID, CrmWritten, SurveyAnswered, WriteOutcome
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig

log = get_logger(__name__)

_LOCK_NAMESPACE = 0x4E50_5353  # "NPSS": advisory locks on survey requests being written


class RequestBusyError(RuntimeError):
    """Another replica writes this request now: the message is retried later."""


class SurveyWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        coalescer: CommandCoalescer,
        config: PortalConfig,
        *,
        locks: LockSession | None = None,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._coalescer = coalescer
        self._config = config
        self._lists: dict[int, dict[str, dict[str, str]]] = {}
        self._writing = WriterLocks(
            locks or LockSession(pool),
            _LOCK_NAMESPACE,
            lambda request: RequestBusyError(f"survey request {request} is written elsewhere"),
        )
        """One writer per request, in this process and across replicas."""

    @property
    def _entity_type_id(self) -> int:
        return self._config.survey.entity_type_id

    async def _list_values(self, entity_type_id: int) -> dict[str, dict[str, str]]:
        """The list fields of the smart process (or of deals), read once per process."""
        if entity_type_id not in self._lists:
            params = {"entityTypeId": entity_type_id, "useOriginalUfNames": "Y"}
            reply = await self._coalescer.run([Command("fields", "crm.item.fields", params)])
            self._lists[entity_type_id] = list_values(reply.result("fields"))
        return self._lists[entity_type_id]

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        reply = await self._coalescer.run([Command("call", method, params)])
        return reply.result("call")

    async def write(self, event: SurveyAnswered) -> CrmWritten | None:
        """Write `event` into its item; its `crm.written.survey` event, or None when this
        version (or a newer one) was written before."""
        async with self._writing.hold(str(event.request_id)):
            return await self._write(event)

    async def _write(self, event: SurveyAnswered) -> CrmWritten | None:
        row = await self._pool.fetchrow(
            "SELECT item_id, version FROM crm_survey_items WHERE request_id = $1",
            event.request_id,
        )
        if row is not None and row["version"] >= event.version:
            return None
        lists = await self._list_values(entity_type_of(event, self._config))
        try:
            if event.deal_id is not None:
                fields = deal_fields(event, self._config, lists)
            else:
                fields = item_fields(event, self._config, lists)
        except ActionError as exc:
            raise PermanentError(str(exc)) from exc
        if event.deal_id is not None:
            await self._write_deal(event.deal_id, fields)
            return await self._record(event, "patched", event.deal_id)
        item_id: int | None = row["item_id"] if row is not None else None
        if item_id is None:
            lookup = item_lookup(self._entity_type_id, event)
            reply = await self._coalescer.run(
                [
                    Command("find", "crm.item.list", lookup),
                    Command("contact", "crm.contact.list", contact_lookup(event.contact_id)),
                ]
            )
            item_id = found_item(reply.result("find"))
            responsible = contact_responsible(reply.result("contact"))
            if item_id is None and responsible is not None:
                fields[self._config.survey.fields.responsible] = responsible
        outcome: WriteOutcome
        params = {"entityTypeId": self._entity_type_id, "fields": fields, "useOriginalUfNames": "Y"}
        if item_id is None:
            try:
                item_id = written_item_id(await self._call("crm.item.add", params))
            except ActionError as exc:
                raise PermanentError(str(exc)) from exc
            outcome = "created"
        else:
            await self._call("crm.item.update", {**params, "id": item_id})
            outcome = "patched"
        return await self._record(event, outcome, item_id)

    async def _write_deal(self, deal_id: int, fields: dict[str, Any]) -> None:
        params = {
            "entityTypeId": DEAL_ENTITY_TYPE_ID,
            "id": deal_id,
            "fields": fields,
            "useOriginalUfNames": "Y",
        }
        try:
            await self._call("crm.item.update", params)
        except NotFound as exc:
            raise PermanentError(f"NPS deal {deal_id} no longer exists") from exc

    async def _record(
        self, event: SurveyAnswered, outcome: WriteOutcome, item_id: int
    ) -> CrmWritten:
        """Note the version written into `item_id` and queue its `crm.written.survey`, in one
        short transaction."""
        written = survey_written(event, outcome, item_id)
        async with self._outbox.transaction(self._pool) as conn:
            await _note_version(conn, event, item_id)
            await self._outbox.enqueue(conn, [written])
        return written


async def _note_version(conn: Conn, event: SurveyAnswered, item_id: int) -> None:
    await conn.execute(
        """INSERT INTO crm_survey_items (request_id, item_id, version, portal)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (request_id) DO UPDATE
               SET item_id = EXCLUDED.item_id, version = EXCLUDED.version,
                   portal = EXCLUDED.portal, written_at = now()""",
        event.request_id,
        item_id,
        event.version,
        event.portal.key,
    )


async def handle_survey(event: SurveyAnswered, writer: SurveyWriter) -> None:
    """The `crm_sync.surveys` consumer: transient errors propagate (retried), permanent ones
    dead-letter."""
    written = await writer.write(event)
    if written is None:
        log.info("survey_already_written", request_id=str(event.request_id), version=event.version)
        return
    log.info(
        "survey_written",
        request_id=str(event.request_id),
        version=event.version,
        outcome=written.outcome,
        item_id=written.entity_id,
    )
