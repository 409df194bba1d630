"""The portal's data and how writes change it: entities, history, users, tasks, comments."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from services.sandbox.products import MEASURES, OWNER_CODES, build_row, owner_entity_type
from services.sandbox.query import Condition, matches, sort_records
from services.sandbox.schema import (
    TASK_CLOSED,
    TASK_FIELDS,
    Category,
    EntityType,
    FieldSpec,
    contact_type,
    deal_type,
    lead_type,
)
from services.sandbox.state import Change, PortalState, Product
from services.sandbox.timing import Clock, iso
from services.sandbox.values import FieldValueError, apply_multifield, coerce

ItemEvent = Callable[[str, int, int], None]
"""Called with (event name, entityTypeId, item id) after a smart-process item, a deal or a lead
is saved, or a task (entityTypeId 0: not a CRM entity)."""

ITEM_ADD = "ONCRMDYNAMICITEMADD"
ITEM_UPDATE = "ONCRMDYNAMICITEMUPDATE"
DEAL_ADD = "ONCRMDEALADD"
DEAL_UPDATE = "ONCRMDEALUPDATE"
DEAL_MOVED = "ONCRMDEALMOVETOCATEGORY"
"""A deal moved to another funnel fires this, not an update event."""
LEAD_UPDATE = "ONCRMLEADUPDATE"
TASK_UPDATE = "ONTASKUPDATE"

DEAL = 2
# crm.stagehistory.list TYPE_ID: what a record tells about the deal.
CREATED = 1
MOVED = 2
"""Moved to an in-progress stage."""
MOVED_TO_FINAL = 3
"""Moved to a success or failure stage."""
FUNNEL_CHANGED = 5


class Crm:
    """All reads and writes of portal data; the REST methods and the seeder go through here."""

    def __init__(
        self, state: PortalState, clock: Clock, actor_id: int, on_item_event: ItemEvent
    ) -> None:
        self.state = state
        self.actor_id = actor_id
        self.revision = 0
        self._clock = clock
        self._on_item_event = on_item_event

    def install_defaults(self) -> None:
        """Lead, deal (its default funnel) and contact types and the webhook's own user: what
        every portal has."""
        self.register_type(lead_type())
        self.register_type(deal_type())
        self.register_type(contact_type())
        self.add_user(self.actor_id, "Sandbox", "Admin", position="Administrator")

    def install_deals(self) -> None:
        """Deals and their default funnel, for a portal saved before the sandbox had them; the
        deal fields added since (``STAGE_SEMANTIC_ID``) for one saved before those."""
        current = deal_type()
        etype = self.state.entity_types.get(current.entity_type_id)
        if etype is None:
            self.register_type(current)
            return
        missing = {name: spec for name, spec in current.fields.items() if name not in etype.fields}
        if not missing:
            return
        ordered = {name: etype.fields.get(name, spec) for name, spec in current.fields.items()}
        etype.fields = {**ordered, **etype.fields}
        for record in self.records(etype.entity_type_id).values():
            record["STAGE_SEMANTIC_ID"] = etype.stage_semantics(
                record.get("CATEGORY_ID"), record.get("STAGE_ID")
            )
        self.revision += 1

    def next_id(self, counter: str) -> int:
        value = self.state.counters.get(counter, self.state.id_base) + 1
        self.state.counters[counter] = value
        return value

    def register_type(self, etype: EntityType) -> EntityType:
        self.state.entity_types[etype.entity_type_id] = etype
        self.state.entities.setdefault(etype.entity_type_id, {})
        self.revision += 1
        return etype

    def add_user_field(self, entity_type_id: int, spec: FieldSpec) -> FieldSpec:
        registered = spec.model_copy(update={"uf_id": self.next_id("userfield")})
        self.state.entity_types[entity_type_id].fields[spec.name] = registered
        self.revision += 1
        return registered

    def add_category(self, etype: EntityType, name: str, sort: int = 500) -> Category:
        """A new pipeline of `etype`; ids are unique across the portal, as on Bitrix24."""
        taken = [c.id for t in self.state.entity_types.values() for c in t.categories]
        category = Category(id=max(taken, default=0) + 1, name=name, sort=sort)
        etype.categories.append(category)
        self.revision += 1
        return category

    def entity_type(self, entity_type_id: int) -> EntityType | None:
        return self.state.entity_types.get(entity_type_id)

    def type_by_code(self, code: str) -> EntityType | None:
        return next((t for t in self.state.entity_types.values() if t.code == code.lower()), None)

    def records(self, entity_type_id: int) -> dict[int, dict[str, Any]]:
        return self.state.entities.setdefault(entity_type_id, {})

    def get(self, entity_type_id: int, entity_id: int) -> dict[str, Any] | None:
        return self.records(entity_type_id).get(entity_id)

    def find(
        self,
        entity_type_id: int,
        conditions: Iterable[Condition],
        order: list[tuple[str, bool]],
    ) -> list[dict[str, Any]]:
        found = [r for r in self.records(entity_type_id).values() if matches(r, conditions)]
        return sort_records(found, order or [("ID", False)])

    def add(
        self,
        entity_type_id: int,
        values: Mapping[str, Any],
        *,
        method: str,
        strict_multiple: bool = False,
        created_at: float | None = None,
    ) -> dict[str, Any]:
        """Create an entity from UPPER-named raw values (unknown and read-only names ignored).
        The given values enter the history as changes from empty, made by ``method``."""
        etype = self.state.entity_types[entity_type_id]
        record: dict[str, Any] = {name: _empty(spec) for name, spec in etype.fields.items()}
        given = self._coerce(etype, record, values, strict_multiple)
        record.update(etype.defaults)
        record.update(given)
        self._place(etype, {}, record)
        entity_id = self.next_id(f"entity:{entity_type_id}")
        record["ID"] = entity_id
        if etype.dynamic and not record.get("TITLE"):
            record["TITLE"] = f"{etype.title} #{entity_id}"
        if "ASSIGNED_BY_ID" in etype.fields and record.get("ASSIGNED_BY_ID") is None:
            record["ASSIGNED_BY_ID"] = self.actor_id
        stamp = iso(self._clock() if created_at is None else created_at)
        record.update(
            {
                etype.created_time: stamp,
                etype.updated_time: stamp,
                etype.created_by: self.actor_id,
                etype.updated_by: self.actor_id,
            }
        )
        self.records(entity_type_id)[entity_id] = record
        filled = {name: value for name, value in given.items() if value not in (None, [])}
        self._log(entity_type_id, entity_id, {}, filled, stamp=stamp, method=method)
        self.revision += 1
        if etype.dynamic:
            self._on_item_event(ITEM_ADD, entity_type_id, entity_id)
        elif etype.code == "deal":
            self._record_stage(record, CREATED, stamp)
            self._on_item_event(DEAL_ADD, entity_type_id, entity_id)
        return record

    def update(
        self,
        entity_type_id: int,
        entity_id: int,
        values: Mapping[str, Any],
        *,
        method: str,
        strict_multiple: bool = False,
    ) -> dict[str, Any]:
        """Partial update: only the given fields change; no real change, no save and no event."""
        etype = self.state.entity_types[entity_type_id]
        record = self.records(entity_type_id)[entity_id]
        new = self._coerce(etype, record, values, strict_multiple)
        self._place(etype, record, new)
        changed = {
            name: value
            for name, value in new.items()
            if record.get(name, _empty(etype.fields[name])) != value
        }
        if not changed:
            return record
        if "STAGE_ID" in changed and "PREVIOUS_STAGE_ID" in etype.fields:
            record["PREVIOUS_STAGE_ID"] = record.get("STAGE_ID")
        stamp = iso(self._clock())
        self._log(entity_type_id, entity_id, record, changed, stamp=stamp, method=method)
        record.update(changed)
        record[etype.updated_time] = stamp
        record[etype.updated_by] = self.actor_id
        self.revision += 1
        if etype.dynamic:
            self._on_item_event(ITEM_UPDATE, entity_type_id, entity_id)
        elif etype.code == "deal":
            moved = "CATEGORY_ID" in changed
            if moved:
                self._record_stage(record, FUNNEL_CHANGED, stamp)
            elif "STAGE_ID" in changed:
                final = record.get("STAGE_SEMANTIC_ID") in ("S", "F")
                self._record_stage(record, MOVED_TO_FINAL if final else MOVED, stamp)
            self._on_item_event(DEAL_MOVED if moved else DEAL_UPDATE, entity_type_id, entity_id)
        elif etype.code == "lead":
            self._on_item_event(LEAD_UPDATE, entity_type_id, entity_id)
        return record

    def stage_history(self) -> list[dict[str, Any]]:
        """Deal stage history as ``crm.stagehistory.list`` sees it: only the records of stages of
        each deal's current funnel."""
        deals = self.records(DEAL)
        return [
            entry
            for entry in self.state.stage_history
            if (deal := deals.get(entry["OWNER_ID"])) is not None
            and deal.get("CATEGORY_ID") == entry["CATEGORY_ID"]
        ]

    def _record_stage(self, deal: Mapping[str, Any], type_id: int, stamp: str) -> None:
        self.state.stage_history.append(
            {
                "ID": self.next_id("stagehistory"),
                "TYPE_ID": type_id,
                "OWNER_ID": deal["ID"],
                "CREATED_TIME": stamp,
                "CATEGORY_ID": deal.get("CATEGORY_ID"),
                "STAGE_SEMANTIC_ID": deal.get("STAGE_SEMANTIC_ID"),
                "STAGE_ID": deal.get("STAGE_ID"),
            }
        )

    def history(self, entity_type_id: int, entity_id: int) -> list[Change]:
        return self.state.history.get(entity_type_id, {}).get(entity_id, [])

    def add_user(
        self, user_id: int, name: str, last_name: str, *, email: str = "", position: str = ""
    ) -> dict[str, Any]:
        user = {
            "ID": user_id,
            "ACTIVE": True,
            "NAME": name,
            "LAST_NAME": last_name,
            "EMAIL": email,
            "WORK_POSITION": position,
        }
        self.state.users[user_id] = user
        self.revision += 1
        return user

    def add_task(self, values: Mapping[str, Any]) -> dict[str, Any]:
        task: dict[str, Any] = {name: _empty(spec) for name, spec in TASK_FIELDS.items()}
        task.update({"STATUS": 2, "PRIORITY": 1, "CREATED_BY": self.actor_id})
        for name, raw in values.items():
            spec = TASK_FIELDS.get(name)
            if spec is not None and not spec.read_only:
                task[name] = coerce(spec, raw, strict_multiple=False)
        task["ID"] = self.next_id("task")
        task["CREATED_DATE"] = task["CHANGED_DATE"] = iso(self._clock())
        self.state.tasks[task["ID"]] = task
        self.revision += 1
        return task

    def update_task(self, task_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Partial update of a task (read-only names ignored); a real change moves
        ``CHANGED_DATE``, and ``STATUS`` 4 or 5 sets ``CLOSED_DATE`` (another status clears
        it), and fires ``ONTASKUPDATE``."""
        task = self.state.tasks[task_id]
        changed = {}
        for name, raw in values.items():
            spec = TASK_FIELDS.get(name)
            if spec is None or spec.read_only:
                continue
            value = coerce(spec, raw, strict_multiple=False)
            if task.get(name) != value:
                changed[name] = value
        if not changed:
            return task
        stamp = iso(self._clock())
        task.update(changed)
        task["CHANGED_DATE"] = stamp
        if "STATUS" in changed:
            task["CLOSED_DATE"] = stamp if task["STATUS"] in TASK_CLOSED else None
        self.revision += 1
        self._on_item_event(TASK_UPDATE, 0, task_id)
        return task

    def find_tasks(
        self, conditions: Iterable[Condition], order: list[tuple[str, bool]]
    ) -> list[dict[str, Any]]:
        found = [task for task in self.state.tasks.values() if matches(task, conditions)]
        return sort_records(found, order or [("ID", True)])

    def add_comment(self, etype: EntityType, entity_id: int, text: str) -> dict[str, Any]:
        comment = {
            "ID": self.next_id("comment"),
            "ENTITY_TYPE": etype.code,
            "ENTITY_ID": entity_id,
            "COMMENT": text,
            "AUTHOR_ID": self.actor_id,
            "CREATED": iso(self._clock()),
        }
        self.state.comments.append(comment)
        self.revision += 1
        return comment

    def add_product(
        self, product_id: int, name: str, price: float, *, measure_code: int = 796
    ) -> Product:
        product = Product(
            id=product_id,
            name=name,
            price=price,
            measure_code=measure_code,
            measure_name=MEASURES.get(measure_code, ""),
        )
        self.state.products[product_id] = product
        self.revision += 1
        return product

    def product_rows(self, owner_type: str, owner_id: int) -> list[dict[str, Any]]:
        """The rows of one owner (``ownerType`` compared as ``crm.item.productrow.list`` does,
        by the entity type the code names)."""
        entity_type_id = owner_entity_type(owner_type)
        return [
            row
            for row in self.state.product_rows
            if row["ownerId"] == owner_id and owner_entity_type(row["ownerType"]) == entity_type_id
        ]

    def set_product_rows(
        self, owner_type: str, owner_id: int, raw_rows: Iterable[Any], *, method: str
    ) -> list[dict[str, Any]]:
        """Replace the owner's rows with ``raw_rows`` as a whole (a row that does not fit
        changes nothing); a row keeps its ``id`` when it names one of the owner's rows. A
        deal's ``OPPORTUNITY`` becomes the rows' total (a deal update when it changes)."""
        entity_type_id = owner_entity_type(owner_type)
        assert entity_type_id is not None
        current = {row["id"]: row for row in self.product_rows(owner_type, owner_id)}
        code = str(owner_type).upper() if str(owner_type).upper() in OWNER_CODES else owner_type
        rows = []
        kept: set[int] = set()
        for index, raw in enumerate(raw_rows):
            wanted = raw.get("id") if isinstance(raw, Mapping) else None
            reuse = _int_or_none(wanted)
            if reuse not in current or reuse in kept:
                reuse = None
            rows.append(
                build_row(
                    raw,
                    index,
                    row_id=reuse if reuse is not None else -1,
                    owner_type=code,
                    owner_id=owner_id,
                    catalog=self._catalog_product,
                )
            )
            if reuse is not None:
                kept.add(reuse)
        for row in rows:
            if row["id"] == -1:
                row["id"] = self.next_id("productrow")
        others = [row for row in self.state.product_rows if row["id"] not in current]
        self.state.product_rows = [*others, *rows]
        self.revision += 1
        etype = self.state.entity_types.get(entity_type_id)
        if etype is not None and "OPPORTUNITY" in etype.fields:
            total = round(sum(row["price"] * row["quantity"] for row in rows), 2)
            self.update(entity_type_id, owner_id, {"OPPORTUNITY": total}, method=method)
        return rows

    def fire_trigger(
        self, target: str, code: str | None, entity_type_id: int, entity_id: int
    ) -> dict[str, Any]:
        """Record one ``crm.automation.trigger`` call; ``matched`` when the portal has a
        trigger with that code, ``found`` when the target exists."""
        run = {
            "id": self.next_id("automation"),
            "target": target,
            "code": code,
            "entity_type_id": entity_type_id,
            "entity_id": entity_id,
            "found": self.entity_type(entity_type_id) is not None
            and self.get(entity_type_id, entity_id) is not None,
            "matched": code is not None and code in self.state.trigger_codes,
            "time": iso(self._clock()),
        }
        self.state.automation.append(run)
        self.revision += 1
        return run

    def add_log_message(
        self, entity_type_id: int, entity_id: int, title: str, text: str, icon_code: str
    ) -> dict[str, Any]:
        message = {
            "id": self.next_id("logmessage"),
            "entityTypeId": entity_type_id,
            "entityId": entity_id,
            "created": iso(self._clock()),
            "authorId": self.actor_id,
            "title": title,
            "text": text,
            "iconCode": icon_code,
        }
        self.state.log_messages.append(message)
        self.revision += 1
        return message

    def _catalog_product(self, product_id: int) -> dict[str, Any] | None:
        product = self.state.products.get(product_id)
        return None if product is None else product.model_dump()

    def _log(
        self,
        entity_type_id: int,
        entity_id: int,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        *,
        stamp: str,
        method: str,
    ) -> None:
        log = self.state.history.setdefault(entity_type_id, {}).setdefault(entity_id, [])
        log.extend(
            Change(field=name, before=before.get(name), after=value, time=stamp, method=method)
            for name, value in after.items()
        )

    def _coerce(
        self,
        etype: EntityType,
        record: Mapping[str, Any],
        values: Mapping[str, Any],
        strict_multiple: bool,
    ) -> dict[str, Any]:
        coerced: dict[str, Any] = {}
        for name, raw in values.items():
            spec = etype.fields.get(name)
            if spec is None or spec.read_only:
                continue
            if spec.type == "crm_multifield":
                coerced[name] = apply_multifield(
                    record.get(name) or [], raw, name, lambda: self.next_id("multifield")
                )
            else:
                coerced[name] = coerce(spec, raw, strict_multiple=strict_multiple)
        return coerced

    @staticmethod
    def _place(etype: EntityType, record: Mapping[str, Any], new: dict[str, Any]) -> None:
        """Pipeline and stage of a smart-process item: a default pipeline, a known one, and
        its first stage when the pipeline changes without a stage."""
        if not etype.categories:
            return
        category_id = new.get("CATEGORY_ID", record.get("CATEGORY_ID"))
        if category_id is None:
            default = etype.default_category()
            category_id = default.id if default else None
        elif etype.category(category_id) is None:
            raise FieldValueError(
                "CRM_FIELD_ERROR_VALUE_NOT_VALID", 'Invalid value for field "CATEGORY_ID"'
            )
        new["CATEGORY_ID"] = category_id
        moved = record.get("CATEGORY_ID") != category_id or not record.get("STAGE_ID")
        category = etype.category(category_id) if category_id is not None else None
        staged = category is not None and bool(category.stages) and bool(new.get("STAGE_ID"))
        if staged and category is not None and category.stage(new["STAGE_ID"]) is None:
            # Bitrix24 answers `true` to a stage of another funnel and keeps the stage.
            del new["STAGE_ID"]
        if category_id is not None and moved and not new.get("STAGE_ID"):
            new["STAGE_ID"] = etype.first_stage(category_id)
        if "STAGE_SEMANTIC_ID" in etype.fields:
            stage = new.get("STAGE_ID", record.get("STAGE_ID"))
            new["STAGE_SEMANTIC_ID"] = etype.stage_semantics(category_id, stage)


def _int_or_none(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _empty(spec: FieldSpec) -> Any:
    """A field's value before anything is written: booleans default to "no", as in Bitrix24."""
    if spec.multiple:
        return []
    return False if spec.type == "boolean" else None
