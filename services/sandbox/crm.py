"""The portal's data and how writes change it: entities, history, users, tasks, comments."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from services.sandbox.query import Condition, matches, sort_records
from services.sandbox.schema import (
    TASK_FIELDS,
    Category,
    EntityType,
    FieldSpec,
    contact_type,
    deal_type,
    lead_type,
)
from services.sandbox.state import Change, PortalState
from services.sandbox.timing import Clock, iso
from services.sandbox.values import FieldValueError, apply_multifield, coerce

ItemEvent = Callable[[str, int, int], None]
"""Called with (event name, entityTypeId, item id) after a smart-process item or a deal is
saved."""

ITEM_ADD = "ONCRMDYNAMICITEMADD"
ITEM_UPDATE = "ONCRMDYNAMICITEMUPDATE"
DEAL_ADD = "ONCRMDEALADD"
DEAL_UPDATE = "ONCRMDEALUPDATE"
DEAL_MOVED = "ONCRMDEALMOVETOCATEGORY"
"""A deal moved to another funnel fires this, not an update event."""


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
        """Deals and their default funnel, for a portal saved before the sandbox had them."""
        if deal_type().entity_type_id not in self.state.entity_types:
            self.register_type(deal_type())

    def next_id(self, counter: str) -> int:
        value = self.state.counters.get(counter, 0) + 1
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
            self._on_item_event(DEAL_MOVED if moved else DEAL_UPDATE, entity_type_id, entity_id)
        return record

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


def _empty(spec: FieldSpec) -> Any:
    """A field's value before anything is written: booleans default to "no", as in Bitrix24."""
    if spec.multiple:
        return []
    return False if spec.type == "boolean" else None
