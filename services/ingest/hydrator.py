"""The `ingest.hydrate` consumer: a `WebhookReceived` → the item read → `FormSubmitted`.

Events carry only an item id, so the item is read with `crm.item.list` (`@id` filter,
`useOriginalUfNames=Y`) through the portal's shared rate budget. `ItemReader` (a `BatchReader`)
gathers the ids of the messages being handled at the same moment into one call (up to 50, the
page size), and while the portal stalls into the next one. Robot
calls and sweep submissions bring the item's fields along and need no read.

Publishing happens in one statement with the claim of the incoming message id, so a redelivered
message publishes nothing twice; `store.record_answer` also drops a state of the item that was
already published (the same answer reached us by event and by sweep, say) or is older than one
published. Two states within one second (Bitrix24's `updatedTime` keeps seconds) tie: then the
last state published is read (`store.last_version`) and `services.ingest.versions` decides; the
new state goes out with the next per-item `revision`, and the item is read once more (a
`webhook.received` with source `reread`), since only a read that starts after both states were
seen knows which came last.

Deals (entity type 2, when `deal_surveys` or `dispatch.sales` are configured) take the same
path, read with `crm.item.list` too. A deal of a sales funnel `dispatch.sales` watches is handed
to `services.ingest.closed_sales` (always read, robot calls too: its stage, people and product
rows), which announces a closed sale once as `sale.closed`. Otherwise a deal of a funnel no deal
survey names, or an NPS deal not answered yet, is dropped (it is no answer); an answered one is
published like an item, its manager being the sales deal's responsible when the survey links the
sales deal (one more read, batched alike).

An item of a category no segment maps is held (`store.hold_unmapped`) with the fields it was read
with, until the configuration maps the category (`services.ingest.release`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
from prometheus_client import Counter

from services.ingest import store, users
from services.ingest.batching import BatchReader
from services.ingest.closed_sales import SaleAnnouncer
from services.ingest.contacts import ContactManagers
from services.ingest.mapping import (
    Answer,
    AnswerError,
    EnumValues,
    NotAnAnswer,
    NotASurvey,
    UnknownListItemError,
    deal_responsible,
    map_deal,
    map_item,
    sale_deal_id,
)
from services.ingest.release import release_held
from services.ingest.sale_reads import FunnelCatalog, ProductRowReader
from services.ingest.sales import in_sales_funnel, sales_funnels
from services.ingest.versions import next_step
from shared.bitrix24 import Bitrix24Client, NotFound
from shared.db import Conn
from shared.events import DEAL_ENTITY_TYPE_ID, FormSubmitted, WebhookReceived
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig

CONSUMER = "ingest.hydrate"
REREAD_EVENT = "REREAD"
"""The `event` of a `webhook.received` ingest queues to read an item once more (`reread`)."""
FIELDS_REFRESH_S = 60.0

HYDRATED = Counter(
    "nps_ingest_hydrated_total",
    "Webhook events turned into answers, by outcome",
    ["outcome"],
)

log = get_logger(__name__)

_Mapped = TypeVar("_Mapped", Answer | NotASurvey, Answer | NotAnAnswer)


class ItemReader(BatchReader[int, dict[str, Any]]):
    """Reads items (and deals) by entity type and id with `crm.item.list`, the ids of concurrent
    messages in one call (`BatchReader`: one sender per entity type, stall-safe)."""

    async def read(self, key: int, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        try:
            response = await self._client.call(
                "crm.item.list",
                {
                    "entityTypeId": key,
                    "filter": {"@id": list(ids)},
                    "select": ["*"],
                    "useOriginalUfNames": "Y",
                },
            )
        except NotFound as exc:
            log.warning("items_not_found", entity_type_id=key, reason=str(exc))
            return {}
        result = response.result if isinstance(response.result, Mapping) else {}
        items = result.get("items") or []
        return {int(item["id"]): item for item in items if isinstance(item, dict)}


class FieldCatalog:
    """Enumeration items of the smart process's fields (`crm.item.fields`), cached per process."""

    def __init__(self, client: Bitrix24Client, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._cache: dict[int, tuple[float, dict[str, dict[str, str]]]] = {}
        self._lock = asyncio.Lock()

    async def enums(self, entity_type_id: int) -> EnumValues:
        """Field name → {list item ID → VALUE}, read once and then served from the cache."""
        async with self._lock:
            cached = self._cache.get(entity_type_id)
            return cached[1] if cached is not None else await self._read(entity_type_id)

    async def refresh(self, entity_type_id: int) -> EnumValues | None:
        """Re-read the definitions (a list item was added since); None when they were read less
        than `FIELDS_REFRESH_S` ago, so a burst of unknown values cannot hammer the portal."""
        async with self._lock:
            cached = self._cache.get(entity_type_id)
            if cached is not None and self._clock() - cached[0] < FIELDS_REFRESH_S:
                return None
            return await self._read(entity_type_id)

    async def _read(self, entity_type_id: int) -> EnumValues:
        response = await self._client.call(
            "crm.item.fields", {"entityTypeId": entity_type_id, "useOriginalUfNames": "Y"}
        )
        values = enumeration_items(response.result)
        self._cache[entity_type_id] = (self._clock(), values)
        return values


class VersionConflictError(Exception):
    """Another message recorded a state of the item's second while this one was deciding its
    revision: not permanent, the message is retried and decides again."""


class FieldsOutdatedError(Exception):
    """An enumeration value is unknown and the field definitions were read only moments ago:
    not permanent, the message is retried and the definitions re-read once they may be stale."""


def enumeration_items(result: Any) -> dict[str, dict[str, str]]:
    """Read `crm.item.fields`' result: each enumeration field (by its name and its upperName)
    with its list items (`ID` → `VALUE`)."""
    fields = result.get("fields") if isinstance(result, Mapping) else None
    values: dict[str, dict[str, str]] = {}
    if not isinstance(fields, Mapping):
        return values
    for name, spec in fields.items():
        if not isinstance(spec, Mapping) or spec.get("type") != "enumeration":
            continue
        items = {
            str(_either(entry, "ID", "id")): str(_either(entry, "VALUE", "value"))
            for entry in spec.get("items") or []
            if isinstance(entry, Mapping)
        }
        values[name] = items
        upper = spec.get("upperName")
        if isinstance(upper, str) and upper:
            values[upper] = items
    return values


def _either(entry: Mapping[str, Any], *keys: str) -> Any:
    return next((entry[key] for key in keys if key in entry), "")


class Hydrator:
    """Handles one `WebhookReceived`: read (or take) the item, map it, publish the answer."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        reader: ItemReader,
        catalog: FieldCatalog,
        config: PortalConfig,
        *,
        contacts: ContactManagers | None = None,
        sales: SaleAnnouncer | None = None,
    ) -> None:
        if config.survey.manager == "contact" and contacts is None:
            raise ValueError("survey.manager: contact needs the contacts' responsibles reader")
        self._pool = pool
        self._outbox = outbox
        self._reader = reader
        self._catalog = catalog
        self._config = config
        self._contacts = contacts
        self._wanted: set[tuple[str, int]] = set()
        """Users this process has marked wanted (`users.want` is then a no-op)."""
        self._sales = sales or SaleAnnouncer(
            pool, outbox, FunnelCatalog(reader.client), ProductRowReader(reader.client)
        )

    def reconfigure(self, config: PortalConfig) -> None:
        """Map the next messages with `config` (a reloaded portal YAML)."""
        self._config = config

    async def handle(self, event: WebhookReceived) -> None:
        nps_type = self._config.survey.entity_type_id
        if event.entity_type_id == DEAL_ENTITY_TYPE_ID and (
            self._config.deal_surveys or sales_funnels(self._config)
        ):
            await self._handle_deal(event)
            return
        if event.entity_type_id != nps_type:
            self._dropped("other_entity_type", event, f"not the NPS smart process {nps_type}")
            return
        item = event.fields
        if item is None:
            item = await self._reader.get(event.entity_type_id, event.item_id)
            if item is None:
                self._dropped("item_gone", event, "the item does not exist (any more)")
                return
        mapped = await self._map(item)
        if isinstance(mapped, NotASurvey):
            await self._hold(event, item, mapped)
            return
        if self._contacts is not None and self._config.survey.manager == "contact":
            # Whose NPS it is: the contact's responsible, not the item's (survey.manager).
            contact = mapped.contact_id
            manager = None if contact is None else await self._contacts.responsible(contact)
            mapped = mapped.managed_by(manager)
        await self._publish(event, mapped)

    async def _handle_deal(self, event: WebhookReceived) -> None:
        deal = event.fields
        sale_robot = deal is not None and in_sales_funnel(deal, self._config)
        if deal is None or sale_robot:
            # A sale is always read, a robot's call too: its stage, people and products.
            deal = await self._reader.get(DEAL_ENTITY_TYPE_ID, event.item_id)
            if deal is None:
                self._dropped("item_gone", event, "the deal does not exist (any more)")
                return
        if sale_robot or in_sales_funnel(deal, self._config):
            await self._announce(event, deal)
            return
        if not self._config.deal_surveys:
            self._dropped("not_a_sale", event, "the deal is in no sales funnel (dispatch.sales)")
            return
        mapped = await self._mapped(
            DEAL_ENTITY_TYPE_ID, lambda enums: map_deal(deal, self._config, enums)
        )
        if isinstance(mapped, NotAnAnswer):
            self._dropped("not_an_answer", event, mapped.reason)
            return
        survey = self._config.deal_survey(mapped.category_id)
        sale = None if survey is None else sale_deal_id(deal, survey)
        if sale is not None:
            # Whose NPS it is: the sales deal's responsible (the survey's sale_deal_field).
            sale_deal = await self._reader.get(DEAL_ENTITY_TYPE_ID, sale)
            if sale_deal is not None:
                mapped = mapped.managed_by(deal_responsible(sale_deal))
        await self._publish(event, mapped)

    async def _announce(self, event: WebhookReceived, deal: dict[str, Any]) -> None:
        """A deal of a sales funnel: `sale.closed` once, when it is a closed sale."""
        try:
            announced = await self._sales.announce(event, deal, self._config)
        except AnswerError as exc:
            HYDRATED.labels(outcome="invalid").inc()
            raise PermanentError(str(exc)) from exc
        if announced.outcome == "not_a_sale":
            self._dropped("not_a_sale", event, announced.reason or "")
            return
        HYDRATED.labels(outcome=announced.outcome).inc()
        sale = announced.sale
        log.info(
            "sale_announced" if announced.outcome == "sale_closed" else "sale_known",
            deal_id=event.item_id,
            source=event.source,
            category_id=None if sale is None else sale.category_id,
            stage_id=None if sale is None else sale.stage_id,
            products=None if sale is None else len(sale.products),
            sale_event_id=None if sale is None else str(sale.event_id),
        )

    async def _publish(self, event: WebhookReceived, mapped: Answer) -> None:
        async with self._pool.acquire() as conn:
            await self._want(conn, event.portal.key, mapped.responsible_id)
            outcome, form = await self._record(conn, event, mapped)
        if outcome == "redelivered":
            HYDRATED.labels(outcome="redelivered").inc()
            log.info("hydrate_redelivery_skipped", item_id=event.item_id)
            return
        HYDRATED.labels(outcome="published" if outcome == "new" else outcome).inc()
        log.info(
            "answer_published" if outcome == "new" else f"answer_{outcome}",
            item_id=mapped.item_id,
            category_id=mapped.category_id,
            answers=len(mapped.answers),
            revision=form.revision,
            form_event_id=str(form.event_id),
        )

    async def _record(
        self, conn: Conn, event: WebhookReceived, mapped: Answer
    ) -> tuple[str, FormSubmitted]:
        """Record and queue the state `mapped` (one statement, no transaction), or, when it ties
        with another state of the same second, break the tie (`_break_tie`)."""
        envelope = event.caused("form", mapped.fingerprint())
        form = FormSubmitted.of(mapped, portal=event.portal, **envelope)
        outcome: str = await store.record_answer(
            self._outbox, conn, CONSUMER, str(event.event_id), answer=mapped, form=form
        )
        if outcome == "tie":
            async with self._outbox.transaction(conn):
                return await self._break_tie(conn, event, mapped, envelope)
        if outcome == "conflict":
            raise VersionConflictError(
                f"item {mapped.item_id}: another state of it was published meanwhile"
            )
        return outcome, form

    async def _break_tie(
        self, conn: Conn, event: WebhookReceived, mapped: Answer, envelope: dict[str, Any]
    ) -> tuple[str, FormSubmitted]:
        """In one transaction: decide from the last state published (`next_step`) whether the
        tied state is published, with the next revision, and whether the item is read once
        more; a conflict rolls it all back."""
        fingerprint = mapped.fingerprint()
        last, known = await store.last_version(
            conn,
            event.portal.key,
            mapped.entity_type_id,
            mapped.item_id,
            (mapped.updated_at, fingerprint),
        )
        step = next_step(
            last, mapped.updated_at, fingerprint, known=known, reread=event.source == "reread"
        )
        log.info("answer_tie", item_id=mapped.item_id, step=step.outcome, reread=step.reread)
        if step.reread:
            await self._outbox.enqueue(conn, [self._reread(event, fingerprint)])
        outcome: str = step.outcome
        form = FormSubmitted.of(mapped, portal=event.portal, **envelope)
        if step.outcome == "new":
            revised = mapped.model_copy(update={"revision": step.revision})
            form = FormSubmitted.of(revised, portal=event.portal, **envelope)
            outcome = await store.record_answer(
                self._outbox,
                conn,
                CONSUMER,
                str(event.event_id),
                answer=mapped,
                form=form,
                seen=None if last is None else last.revision,
            )
        if outcome in ("conflict", "tie"):
            raise VersionConflictError(
                f"item {mapped.item_id}: another state of it was published meanwhile"
            )
        return outcome, form

    async def _want(self, conn: Conn, portal: str, user_id: int | None) -> None:
        """Mark `user_id` wanted (`users.want`), once per process: before the answer is
        recorded, so that a crash between the two leaves the name read all the same."""
        if user_id is None or (portal, user_id) in self._wanted:
            return
        await users.want(conn, portal, user_id)
        self._wanted.add((portal, user_id))

    @staticmethod
    def _reread(event: WebhookReceived, fingerprint: str) -> WebhookReceived:
        """One more read of the item of `event` (its id derived from the message and the state
        read, so a redelivery asks for the same read)."""
        return WebhookReceived(
            **event.caused("reread", fingerprint),
            portal=event.portal,
            source="reread",
            event=REREAD_EVENT,
            entity_type_id=event.entity_type_id,
            item_id=event.item_id,
        )

    async def _map(self, item: Mapping[str, Any]) -> Answer | NotASurvey:
        return await self._mapped(
            self._config.survey.entity_type_id, lambda enums: map_item(item, self._config, enums)
        )

    async def _mapped(self, entity_type_id: int, read: Callable[[EnumValues], _Mapped]) -> _Mapped:
        """`read` with the type's enumeration items, re-read once when a list item is unknown."""
        try:
            try:
                return read(await self._catalog.enums(entity_type_id))
            except UnknownListItemError as unknown:
                enums = await self._catalog.refresh(entity_type_id)
                if enums is None:
                    raise FieldsOutdatedError(
                        f"{unknown}; field definitions were read moments ago, retrying later"
                    ) from unknown
                return read(enums)
        except AnswerError as exc:
            HYDRATED.labels(outcome="invalid").inc()
            raise PermanentError(str(exc)) from exc

    async def _hold(
        self, event: WebhookReceived, item: Mapping[str, Any], unmapped: NotASurvey
    ) -> None:
        """Keep the item until a segment maps its category. Should the config have learned the
        category while the item was being read, it goes out now: a reload releases only what was
        held before it."""
        async with self._pool.acquire() as conn:
            held = await store.hold_unmapped(conn, event, unmapped, item)
        HYDRATED.labels(outcome="held" if held else "stale").inc()
        log.info(
            "hydrate_held" if held else "hydrate_held_stale",
            reason=unmapped.reason,
            category_id=unmapped.category_id,
            item_id=event.item_id,
            source=event.source,
        )
        if self._config.survey.segment(unmapped.category_id) is not None:
            await release_held(self._pool, self._outbox, self._config, portal=event.portal.key)

    def _dropped(self, outcome: str, event: WebhookReceived, reason: str) -> None:
        HYDRATED.labels(outcome=outcome).inc()
        log.info(
            "hydrate_dropped",
            outcome=outcome,
            reason=reason,
            entity_type_id=event.entity_type_id,
            item_id=event.item_id,
            source=event.source,
        )
