"""How stored records look in each API: ``crm.item.*``, legacy ``crm.*``, tasks, users."""

from collections.abc import Iterable, Mapping
from typing import Any

from services.sandbox.naming import upper_to_camel
from services.sandbox.schema import TASK_FIELDS, Category, EntityType, FieldSpec
from services.sandbox.values import Style, render


def render_item(
    etype: EntityType,
    record: Mapping[str, Any],
    *,
    original_uf: bool,
    fields: Iterable[str] | None = None,
) -> dict[str, Any]:
    """An entity as ``crm.item.*`` returns it: camelCase (user fields camelCase unless
    ``original_uf``), typed values, plus ``entityTypeId``; no ``PHONE``/``EMAIL`` lists."""
    names = etype.output_names(original_uf=original_uf)
    chosen = (
        fields
        if fields is not None
        else [name for name, spec in etype.fields.items() if spec.type != "crm_multifield"]
    )
    item = {names[name]: render(etype.fields[name], record.get(name), "item") for name in chosen}
    item["entityTypeId"] = etype.entity_type_id
    return item


def render_category(etype: EntityType, category: Category) -> dict[str, Any]:
    """A pipeline as ``crm.category.get``/``list`` return it."""
    return {
        "id": category.id,
        "name": category.name,
        "sort": category.sort,
        "entityTypeId": etype.entity_type_id,
        "isDefault": "Y" if category is etype.default_category() else "N",
    }


def render_legacy(
    etype: EntityType, record: Mapping[str, Any], fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """An entity as ``crm.contact.get``/``list`` return it: UPPER_CASE, values as strings.
    Without a field list, empty ``PHONE``/``EMAIL``-like fields are left out."""
    chosen = (
        fields
        if fields is not None
        else [
            name
            for name, spec in etype.fields.items()
            if spec.type != "crm_multifield" or record.get(name)
        ]
    )
    return {name: render(etype.fields[name], record.get(name), "legacy") for name in chosen}


def render_task(task: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    return {
        upper_to_camel(name): render(TASK_FIELDS[name], task.get(name), "task") for name in fields
    }


def render_user(user: Mapping[str, Any]) -> dict[str, Any]:
    return {**user, "ID": str(user["ID"])}


def describe_field(spec: FieldSpec, style: Style) -> dict[str, Any]:
    """One entry of ``crm.item.fields`` (style ``item``) or ``crm.contact.fields``."""
    description: dict[str, Any] = {
        "type": spec.type,
        "isRequired": spec.required,
        "isReadOnly": spec.read_only,
        "isImmutable": False,
        "isMultiple": spec.multiple,
        "isDynamic": spec.is_uf,
        "title": spec.label,
    }
    if spec.type == "crm_status" and "statusType" in spec.settings:
        description["statusType"] = spec.settings["statusType"]
    if spec.type == "enumeration":
        description["items"] = [{"ID": str(item.id), "VALUE": item.value} for item in spec.items]
    if spec.is_uf:
        description.update(
            listLabel=spec.label,
            formLabel=spec.label,
            filterLabel=spec.label,
            settings=spec.settings or [],
        )
    if style == "item":
        description["upperName"] = spec.name
    return description


def render_userfield(etype: EntityType, spec: FieldSpec, *, labels: bool) -> dict[str, Any]:
    """One entry of ``crm.contact.userfield.list``; labels only when asked for a ``LANG``."""
    userfield: dict[str, Any] = {
        "ID": str(spec.uf_id),
        "ENTITY_ID": etype.uf_entity_id,
        "FIELD_NAME": spec.name,
        "USER_TYPE_ID": spec.type,
        "XML_ID": None,
        "SORT": "100",
        "MULTIPLE": "Y" if spec.multiple else "N",
        "MANDATORY": "Y" if spec.required else "N",
        "SHOW_FILTER": "E",
        "SHOW_IN_LIST": "Y",
        "EDIT_IN_LIST": "Y",
        "IS_SEARCHABLE": "N",
        "SETTINGS": spec.settings or [],
    }
    if labels:
        userfield.update(
            EDIT_FORM_LABEL=spec.label, LIST_COLUMN_LABEL=spec.label, LIST_FILTER_LABEL=spec.label
        )
    if spec.type == "enumeration":
        userfield["LIST"] = [
            {
                "ID": str(item.id),
                "SORT": str(item.sort),
                "VALUE": item.value,
                "DEF": "Y" if item.default else "N",
                "XML_ID": f"{spec.name}_{item.id}",
            }
            for item in spec.items
        ]
    return userfield
