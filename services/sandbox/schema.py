"""Field and entity-type definitions: what fields an entity has and what their types are."""

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from services.sandbox.naming import uf_to_camel, upper_to_camel

INTEGER_TYPES = frozenset(
    {"integer", "user", "employee", "crm_contact", "crm_company", "crm_category", "enumeration"}
)


class EnumItem(BaseModel):
    """One list item of an enumeration user field; entities store its ``id``."""

    id: int
    value: str
    sort: int = 10
    default: bool = False


class FieldSpec(BaseModel):
    """One field, by its UPPER_CASE storage name."""

    name: str
    type: str
    title: str = ""
    multiple: bool = False
    read_only: bool = False
    required: bool = False
    uf_id: int | None = None
    items: list[EnumItem] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_uf(self) -> bool:
        return self.name.startswith("UF_")

    @property
    def label(self) -> str:
        return self.title or self.name

    def item(self, item_id: int) -> EnumItem | None:
        return next((item for item in self.items if item.id == item_id), None)


class StageDef(BaseModel):
    """A stage of a deal funnel, as ``crm.status.list`` lists it (``SEMANTICS`` S, F or none)."""

    status_id: str
    name: str
    sort: int
    semantics: str | None = None


LEAD_STATUSES: tuple[StageDef, ...] = (
    StageDef(status_id="NEW", name="Unprocessed", sort=10),
    StageDef(status_id="IN_PROCESS", name="In progress", sort=20),
    StageDef(status_id="PROCESSED", name="Processed", sort=30),
    StageDef(status_id="CONVERTED", name="Good lead", sort=40, semantics="S"),
    StageDef(status_id="JUNK", name="Junk lead", sort=50, semantics="F"),
)
"""The lead statuses (``crm.status.list`` with ``ENTITY_ID`` ``STATUS``), as a new portal has
them: a lead starts at ``NEW``; ``CONVERTED`` is the success, ``JUNK`` the failure."""
TASK_CLOSED = frozenset({4, 5})
"""Task ``STATUS`` values with a ``CLOSED_DATE``: 4 supposedly completed, 5 completed."""


class Category(BaseModel):
    """A pipeline of a smart process ("segment" in b24-nps terms) or a deal funnel (with its
    stages listed)."""

    id: int
    name: str
    sort: int = 500
    is_default: bool = False
    stages: list[StageDef] = Field(default_factory=list)

    def stage(self, status_id: object) -> StageDef | None:
        return next((s for s in self.stages if s.status_id == status_id), None)


class EntityType(BaseModel):
    """A CRM entity type (lead, contact, a smart process) with its fields."""

    entity_type_id: int
    title: str
    code: str
    uf_entity_id: str
    dynamic: bool = False
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    camel_overrides: dict[str, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    categories: list[Category] = Field(default_factory=list)
    created_time: str = "CREATED_TIME"
    updated_time: str = "UPDATED_TIME"
    created_by: str = "CREATED_BY"
    updated_by: str = "UPDATED_BY"

    def user_fields(self) -> list[FieldSpec]:
        return [spec for spec in self.fields.values() if spec.is_uf]

    def output_names(self, *, original_uf: bool) -> dict[str, str]:
        """UPPER name -> the name ``crm.item.*`` uses; a UF whose camelCase name collides
        with another field keeps its UPPER name."""
        names = {
            name: self.camel_overrides.get(name, upper_to_camel(name))
            for name, spec in self.fields.items()
            if not spec.is_uf
        }
        uf_names = {spec.name: uf_to_camel(spec.name) for spec in self.user_fields()}
        taken = Counter([*names.values(), *uf_names.values()])
        for name, camel in uf_names.items():
            names[name] = name if original_uf or taken[camel] > 1 else camel
        return names

    def resolve(self, name: str) -> FieldSpec | None:
        """The field called ``name`` in UPPER_CASE or camelCase (both accepted everywhere)."""
        if name in self.fields:
            return self.fields[name]
        for upper, camel in self.output_names(original_uf=False).items():
            if camel == name:
                return self.fields[upper]
        return None

    def category(self, category_id: int) -> Category | None:
        return next((item for item in self.categories if item.id == category_id), None)

    def default_category(self) -> Category | None:
        return next((item for item in self.categories if item.is_default), None) or next(
            iter(self.categories), None
        )

    def stage_semantics(self, category_id: int | None, stage_id: object) -> str:
        """``P`` (in progress), ``S`` (success) or ``F`` (failure): the semantics of the stage in
        its funnel, as ``STAGE_SEMANTIC_ID`` reads; a stage the funnel does not list is ``P``."""
        category = self.category(category_id) if category_id is not None else None
        stage = category.stage(stage_id) if category is not None else None
        return (stage.semantics if stage is not None else None) or "P"

    def first_stage(self, category_id: int) -> str:
        category = self.category(category_id)
        if category is not None and category.stages:
            return min(category.stages, key=lambda s: s.sort).status_id
        return f"DT{self.entity_type_id}_{category_id}:NEW"


def field(name: str, type_: str, title: str = "", **options: Any) -> FieldSpec:
    return FieldSpec(name=name, type=type_, title=title or name, **options)


def _system(*names: str) -> list[FieldSpec]:
    types = {"ID": "integer"}
    return [field(name, types.get(name, "user"), read_only=True) for name in names]


def _multifields() -> list[FieldSpec]:
    titles = {"PHONE": "Phone", "EMAIL": "E-mail", "WEB": "Website", "IM": "Messenger"}
    return [field(name, "crm_multifield", title, multiple=True) for name, title in titles.items()]


_LEGACY_OVERRIDES = {
    "DATE_CREATE": "createdTime",
    "DATE_MODIFY": "updatedTime",
    "CREATED_BY_ID": "createdBy",
    "MODIFY_BY_ID": "updatedBy",
}
_LEGACY_STAMPS = {
    "created_time": "DATE_CREATE",
    "updated_time": "DATE_MODIFY",
    "created_by": "CREATED_BY_ID",
    "updated_by": "MODIFY_BY_ID",
}


def _legacy_stamp_fields() -> list[FieldSpec]:
    return [
        field("DATE_CREATE", "datetime", "Created", read_only=True),
        field("DATE_MODIFY", "datetime", "Modified", read_only=True),
        *_system("CREATED_BY_ID", "MODIFY_BY_ID"),
    ]


def lead_type() -> EntityType:
    specs = [
        *_system("ID"),
        field("TITLE", "string", "Lead name"),
        field("NAME", "string", "First name"),
        field("SECOND_NAME", "string", "Middle name"),
        field("LAST_NAME", "string", "Last name"),
        field("STATUS_ID", "crm_status", "Stage", settings={"statusType": "STATUS"}),
        field("SOURCE_ID", "crm_status", "Source", settings={"statusType": "SOURCE"}),
        field("SOURCE_DESCRIPTION", "string", "Source information"),
        field("COMMENTS", "string", "Comment"),
        field("ASSIGNED_BY_ID", "user", "Responsible person"),
        field("CONTACT_ID", "crm_contact", "Contact"),
        field("COMPANY_ID", "crm_company", "Company"),
        field("OPENED", "boolean", "Available to everyone"),
        field("ORIGINATOR_ID", "string", "External source"),
        field("ORIGIN_ID", "string", "Item ID in data source"),
        *_legacy_stamp_fields(),
        *_multifields(),
    ]
    return EntityType(
        entity_type_id=1,
        title="Lead",
        code="lead",
        uf_entity_id="CRM_LEAD",
        fields={spec.name: spec for spec in specs},
        camel_overrides={**_LEGACY_OVERRIDES, "STATUS_ID": "stageId"},
        defaults={"STATUS_ID": "NEW", "OPENED": True},
        **_LEGACY_STAMPS,
    )


def contact_type() -> EntityType:
    specs = [
        *_system("ID"),
        field("NAME", "string", "First name"),
        field("SECOND_NAME", "string", "Middle name"),
        field("LAST_NAME", "string", "Last name"),
        field("POST", "string", "Position"),
        field("COMMENTS", "string", "Comment"),
        field("TYPE_ID", "crm_status", "Contact type", settings={"statusType": "CONTACT_TYPE"}),
        field("SOURCE_ID", "crm_status", "Source", settings={"statusType": "SOURCE"}),
        field("COMPANY_ID", "crm_company", "Company"),
        field("BIRTHDATE", "date", "Date of birth"),
        field("ASSIGNED_BY_ID", "user", "Responsible person"),
        field("OPENED", "boolean", "Available to everyone"),
        field("EXPORT", "boolean", "Included in export"),
        field("ORIGINATOR_ID", "string", "External source"),
        field("ORIGIN_ID", "string", "Item ID in data source"),
        *_legacy_stamp_fields(),
        *_multifields(),
    ]
    return EntityType(
        entity_type_id=3,
        title="Contact",
        code="contact",
        uf_entity_id="CRM_CONTACT",
        fields={spec.name: spec for spec in specs},
        camel_overrides=_LEGACY_OVERRIDES,
        defaults={"TYPE_ID": "CLIENT", "OPENED": True, "EXPORT": True},
        **_LEGACY_STAMPS,
    )


DEAL = 2
DEAL_STAGES = (
    ("NEW", "New", None),
    ("PREPARATION", "In progress", None),
    ("WON", "Deal won", "S"),
    ("LOSE", "Deal lost", "F"),
)


def deal_funnel(category_id: int, name: str, stages: Any = DEAL_STAGES, **options: Any) -> Category:
    """A deal category with its stages: ``NEW``… in the default funnel (0), ``C<id>:NEW``…
    in the others, as Bitrix24 names them."""
    prefix = "" if category_id == 0 else f"C{category_id}:"
    return Category(
        id=category_id,
        name=name,
        stages=[
            StageDef(status_id=f"{prefix}{code}", name=title, sort=10 * (i + 1), semantics=sem)
            for i, (code, title, sem) in enumerate(stages)
        ],
        **options,
    )


def deal_type() -> EntityType:
    specs = [
        *_system("ID"),
        field("TITLE", "string", "Deal name"),
        field("CATEGORY_ID", "crm_category", "Pipeline"),
        field("STAGE_ID", "crm_status", "Stage"),
        field("STAGE_SEMANTIC_ID", "string", "Stage group", read_only=True),
        field("ASSIGNED_BY_ID", "user", "Responsible person"),
        field("CONTACT_ID", "crm_contact", "Contact"),
        field("COMPANY_ID", "crm_company", "Company"),
        field("OPPORTUNITY", "double", "Amount"),
        field("COMMENTS", "string", "Comment"),
        field("OPENED", "boolean", "Available to everyone"),
        field("ORIGINATOR_ID", "string", "External source"),
        field("ORIGIN_ID", "string", "Item ID in data source"),
        *_legacy_stamp_fields(),
    ]
    return EntityType(
        entity_type_id=DEAL,
        title="Deal",
        code="deal",
        uf_entity_id="CRM_DEAL",
        fields={spec.name: spec for spec in specs},
        camel_overrides=_LEGACY_OVERRIDES,
        defaults={"OPENED": True},
        categories=[deal_funnel(0, "Sales", is_default=True)],
        **_LEGACY_STAMPS,
    )


def smart_process_type(
    entity_type_id: int, title: str, uf_entity_id: str, categories: list[Category]
) -> EntityType:
    specs = [
        *_system("ID"),
        field("XML_ID", "string", "External code"),
        field("TITLE", "string", "Name"),
        *_system("CREATED_BY", "UPDATED_BY", "MOVED_BY"),
        field("CREATED_TIME", "datetime", "Created at", read_only=True),
        field("UPDATED_TIME", "datetime", "Updated at", read_only=True),
        field("MOVED_TIME", "datetime", "Moved at", read_only=True),
        field("CATEGORY_ID", "crm_category", "Pipeline"),
        field("STAGE_ID", "crm_status", "Stage"),
        field("PREVIOUS_STAGE_ID", "crm_status", "Previous stage", read_only=True),
        field("ASSIGNED_BY_ID", "user", "Responsible person"),
        field("CONTACT_ID", "crm_contact", "Contact"),
        field("COMPANY_ID", "crm_company", "Company"),
        field("OPENED", "boolean", "Available to everyone"),
        field("WEBFORM_ID", "integer", "Created by CRM form"),
        field("SOURCE_ID", "crm_status", "Source", settings={"statusType": "SOURCE"}),
        field("SOURCE_DESCRIPTION", "string", "Source information"),
        field("BEGINDATE", "date", "Start date"),
        field("CLOSEDATE", "date", "End date"),
        field("OBSERVERS", "user", "Observers", multiple=True),
    ]
    return EntityType(
        entity_type_id=entity_type_id,
        title=title,
        code=f"dynamic_{entity_type_id}",
        uf_entity_id=uf_entity_id,
        dynamic=True,
        fields={spec.name: spec for spec in specs},
        defaults={"OPENED": True},
        categories=categories,
    )


TASK_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in [
        *_system("ID"),
        field("TITLE", "string", "Title", required=True),
        field("DESCRIPTION", "string", "Description"),
        field("RESPONSIBLE_ID", "user", "Assignee", required=True),
        field("CREATED_BY", "user", "Created by"),
        field("CREATED_DATE", "datetime", "Created at", read_only=True),
        field("CHANGED_DATE", "datetime", "Changed at", read_only=True),
        field("CLOSED_DATE", "datetime", "Closed at", read_only=True),
        field("DEADLINE", "datetime", "Deadline"),
        field("STATUS", "integer", "Status"),
        field("PRIORITY", "integer", "Priority"),
        field("GROUP_ID", "integer", "Workgroup"),
        field("XML_ID", "string", "External code"),
        field("UF_CRM_TASK", "crm", "CRM items", multiple=True),
    ]
}

USER_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in [
        field("ID", "integer"),
        field("ACTIVE", "boolean"),
        field("NAME", "string"),
        field("LAST_NAME", "string"),
        field("EMAIL", "string"),
        field("WORK_POSITION", "string"),
    ]
}

STAGE_HISTORY_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in [
        field("ID", "integer"),
        field("TYPE_ID", "integer"),
        field("OWNER_ID", "integer"),
        field("CREATED_TIME", "datetime"),
        field("CATEGORY_ID", "integer"),
        field("STAGE_SEMANTIC_ID", "string"),
        field("STAGE_ID", "string"),
    ]
}
"""The fields of a deal's ``crm.stagehistory.list`` record (values typed: real integers)."""
