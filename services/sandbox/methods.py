"""The REST methods: each takes the portal's :class:`Crm` and the request parameters and
returns a :class:`Reply` or raises :class:`RestError` (HTTP 400 with Bitrix24's body)."""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from services.sandbox.crm import Crm
from services.sandbox.errors import RestError
from services.sandbox.naming import camel_to_upper
from services.sandbox.query import (
    QueryError,
    Resolver,
    matches,
    page,
    parse_filter,
    parse_order,
    parse_start,
    select_fields,
    sort_records,
)
from services.sandbox.schema import TASK_FIELDS, USER_FIELDS, EntityType, FieldSpec
from services.sandbox.values import FieldValueError
from services.sandbox.views import (
    describe_field,
    render_category,
    render_item,
    render_legacy,
    render_task,
    render_user,
    render_userfield,
)

LEAD = 1
DEAL = 2
CONTACT = 3


@dataclass(frozen=True)
class Reply:
    """A method's ``result``, with ``total``/``next`` for list methods."""

    result: Any
    total: int | None = None
    next: int | None = None


Params = Mapping[str, Any]
Method = Callable[[Crm, Params], Reply]


def param(params: Params, name: str) -> Any:
    """A parameter by name; Bitrix24 accepts ``ID``/``id``, ``FIELDS``/``fields`` and so on."""
    if name in params:
        return params[name]
    lowered = name.lower()
    return next((value for key, value in params.items() if key.lower() == lowered), None)


def flag(value: Any) -> bool:
    return str(value).strip().lower() in ("y", "1", "true")


# --- crm.item.* ---------------------------------------------------------------------------


# Phones and e-mails of leads and contacts are the ``fm`` list in crm.item.*, which the sandbox
# does not offer: there they are neither shown nor written (use crm.contact.*).


def crm_item_get(crm: Crm, params: Params) -> Reply:
    etype = _item_type(crm, params)
    record = _item(crm, etype, params)
    return Reply({"item": render_item(etype, record, original_uf=_original(params))})


def crm_item_list(crm: Crm, params: Params) -> Reply:
    etype = _item_type(crm, params)
    with _invalid_query():
        conditions = parse_filter(param(params, "filter"), etype.resolve)
        order = parse_order(param(params, "order"), etype.resolve)
    fields = select_fields(param(params, "select"), etype.fields, etype.resolve, _item_star)
    rows, total, next_start = page(
        crm.find(etype.entity_type_id, conditions, order), parse_start(param(params, "start"))
    )
    original = _original(params)
    items = [render_item(etype, row, original_uf=original, fields=fields) for row in rows]
    return Reply({"items": items}, total, next_start)


def crm_item_add(crm: Crm, params: Params) -> Reply:
    etype = _item_type(crm, params)
    values = _named_fields(_fields(params), _item_resolver(etype))
    with _invalid_value():
        record = crm.add(etype.entity_type_id, values, method="crm.item.add", strict_multiple=True)
    return Reply({"item": render_item(etype, record, original_uf=_original(params))})


def crm_item_update(crm: Crm, params: Params) -> Reply:
    etype = _item_type(crm, params)
    record = _item(crm, etype, params)
    values = _named_fields(_fields(params), _item_resolver(etype))
    with _invalid_value():
        record = crm.update(
            etype.entity_type_id,
            record["ID"],
            values,
            method="crm.item.update",
            strict_multiple=True,
        )
    return Reply({"item": render_item(etype, record, original_uf=_original(params))})


def crm_item_fields(crm: Crm, params: Params) -> Reply:
    etype = _item_type(crm, params)
    names = etype.output_names(original_uf=_original(params))
    fields = {
        names[name]: describe_field(spec, "item")
        for name, spec in etype.fields.items()
        if _item_star(spec)
    }
    return Reply({"fields": fields})


# --- legacy crm.contact.* / crm.lead.* ----------------------------------------------------


# --- crm.category.* ---------------------------------------------------------------------


def crm_category_list(crm: Crm, params: Params) -> Reply:
    etype = _item_type(crm, params)
    categories = sorted(etype.categories, key=lambda c: (c.sort, c.id))
    return Reply(
        {"categories": [render_category(etype, c) for c in categories]}, total=len(categories)
    )


def crm_category_add(crm: Crm, params: Params) -> Reply:
    etype = _item_type(crm, params)
    fields = _fields(params)
    name = str(param(fields, "name") or "").strip()
    if not name:
        raise RestError(400, "INVALID_ARG_VALUE", 'Required field "name" is missing')
    sort = _int(param(fields, "sort"))
    category = crm.add_category(etype, name, 500 if sort is None else sort)
    return Reply({"category": render_category(etype, category)})


def legacy_get(entity_type_id: int) -> Method:
    def get(crm: Crm, params: Params) -> Reply:
        etype = crm.state.entity_types[entity_type_id]
        return Reply(render_legacy(etype, _legacy_record(crm, entity_type_id, params)))

    return get


def legacy_list(entity_type_id: int) -> Method:
    def list_(crm: Crm, params: Params) -> Reply:
        etype = crm.state.entity_types[entity_type_id]
        resolve = etype.fields.get
        with _invalid_query():
            conditions = parse_filter(param(params, "filter"), resolve)
            order = parse_order(param(params, "order"), resolve)
        fields = select_fields(param(params, "select"), etype.fields, resolve, _legacy_star)
        rows, total, next_start = page(
            crm.find(entity_type_id, conditions, order), parse_start(param(params, "start"))
        )
        return Reply([render_legacy(etype, row, fields) for row in rows], total, next_start)

    return list_


def legacy_fields(entity_type_id: int) -> Method:
    def fields(crm: Crm, params: Params) -> Reply:
        etype = crm.state.entity_types[entity_type_id]
        return Reply({name: describe_field(spec, "legacy") for name, spec in etype.fields.items()})

    return fields


def crm_contact_update(crm: Crm, params: Params) -> Reply:
    record = _legacy_record(crm, CONTACT, params)
    etype = crm.state.entity_types[CONTACT]
    values = _named_fields(_fields(params, legacy=True), etype.fields.get)
    with _invalid_value(legacy=True):
        crm.update(CONTACT, record["ID"], values, method="crm.contact.update")
    return Reply(True)


def crm_contact_userfield_list(crm: Crm, params: Params) -> Reply:
    etype = crm.state.entity_types[CONTACT]
    raw_filter = param(params, "filter")
    wanted = (
        {str(key).upper(): str(value) for key, value in raw_filter.items()}
        if isinstance(raw_filter, Mapping)
        else {}
    )
    labels = wanted.pop("LANG", None) is not None
    rendered = [render_userfield(etype, spec, labels=labels) for spec in etype.user_fields()]
    chosen = [uf for uf in rendered if all(str(uf.get(k)) == v for k, v in wanted.items())]
    order = param(params, "order")
    for key, direction in reversed(list(order.items()) if isinstance(order, Mapping) else []):
        chosen.sort(
            key=lambda uf: _sortable(uf.get(str(key).upper())),
            reverse=str(direction).upper() == "DESC",
        )
    return Reply(chosen)


def crm_lead_add(crm: Crm, params: Params) -> Reply:
    etype = crm.state.entity_types[LEAD]
    values = _named_fields(_fields(params, legacy=True), etype.fields.get)
    with _invalid_value(legacy=True):
        record = crm.add(LEAD, values, method="crm.lead.add")
    return Reply(record["ID"])


def crm_deal_add(crm: Crm, params: Params) -> Reply:
    etype = crm.state.entity_types[DEAL]
    values = _named_fields(_fields(params, legacy=True), etype.fields.get)
    with _invalid_value(legacy=True):
        record = crm.add(DEAL, values, method="crm.deal.add")
    return Reply(record["ID"])


def crm_deal_update(crm: Crm, params: Params) -> Reply:
    """`true` even when a `STAGE_ID` of another funnel was ignored (the stage stays)."""
    record = _legacy_record(crm, DEAL, params)
    etype = crm.state.entity_types[DEAL]
    values = _named_fields(_fields(params, legacy=True), etype.fields.get)
    with _invalid_value(legacy=True):
        crm.update(DEAL, record["ID"], values, method="crm.deal.update")
    return Reply(True)


def crm_status_list(crm: Crm, params: Params) -> Reply:
    """The deal funnels' stages (`ENTITY_ID` `DEAL_STAGE` or `DEAL_STAGE_<id>`), filtered by
    equality on any of the returned keys."""
    etype = crm.state.entity_types[DEAL]
    rows: list[dict[str, Any]] = []
    for category in sorted(etype.categories, key=lambda c: c.id):
        entity = "DEAL_STAGE" if category.id == 0 else f"DEAL_STAGE_{category.id}"
        rows.extend(
            {
                "ID": str(len(rows) + index + 1),
                "ENTITY_ID": entity,
                "STATUS_ID": stage.status_id,
                "NAME": stage.name,
                "SORT": str(stage.sort),
                "SYSTEM": "N",
                "CATEGORY_ID": None if category.id == 0 else str(category.id),
                "SEMANTICS": stage.semantics,
            }
            for index, stage in enumerate(category.stages)
        )
    raw_filter = param(params, "filter")
    wanted = (
        {str(key).upper(): str(value) for key, value in raw_filter.items()}
        if isinstance(raw_filter, Mapping)
        else {}
    )
    chosen = [row for row in rows if all(str(row.get(k)) == v for k, v in wanted.items())]
    return Reply(chosen)


# --- tasks, timeline, users ---------------------------------------------------------------


def tasks_task_add(crm: Crm, params: Params) -> Reply:
    raw = param(params, "fields")
    if not isinstance(raw, Mapping):
        raise RestError(400, "100", "Could not find value for parameter {fields}")
    values = _named_fields(raw, _task_field)
    if not str(values.get("TITLE") or "").strip():
        raise RestError(400, "ERROR_CORE", "Task title not specified")
    responsible = values.get("RESPONSIBLE_ID")
    if responsible in (None, ""):
        raise RestError(400, "ERROR_CORE", "Responsible person not specified")
    if str(responsible) not in {str(user_id) for user_id in crm.state.users}:
        raise RestError(400, "ERROR_CORE", 'User specified in the "Responsible" field not found')
    with _invalid_value():
        task = crm.add_task(values)
    standard = [name for name, spec in TASK_FIELDS.items() if not spec.is_uf]
    return Reply({"task": render_task(task, standard)})


def tasks_task_list(crm: Crm, params: Params) -> Reply:
    with _invalid_query():
        conditions = parse_filter(param(params, "filter"), _task_field)
        order = parse_order(param(params, "order"), _task_field)
    fields = select_fields(
        param(params, "select"), TASK_FIELDS, _task_field, lambda spec: not spec.is_uf
    )
    rows, total, next_start = page(
        crm.find_tasks(conditions, order), parse_start(param(params, "start"))
    )
    return Reply({"tasks": [render_task(task, fields) for task in rows]}, total, next_start)


def crm_timeline_comment_add(crm: Crm, params: Params) -> Reply:
    fields = params.get("fields")  # only the lower-case key is accepted since crm 23.100.0
    if not isinstance(fields, Mapping):
        raise RestError(400, "INVALID_ARG_VALUE", 'Required parameter "fields" is missing')
    etype = crm.type_by_code(str(fields.get("ENTITY_TYPE") or ""))
    entity_id = _int(fields.get("ENTITY_ID"))
    if etype is None or entity_id is None or crm.get(etype.entity_type_id, entity_id) is None:
        raise RestError(400, "NOT_FOUND", "Element not found")
    comment = str(fields.get("COMMENT") or "")
    if not comment.strip():
        raise RestError(400, "INVALID_ARG_VALUE", "Comment text is empty")
    return Reply(crm.add_comment(etype, entity_id, comment)["ID"])


def user_get(crm: Crm, params: Params) -> Reply:
    reserved = {"sort", "order", "start", "filter", "admin_mode"}
    raw_filter = {k: v for k, v in params.items() if k.lower() not in reserved}
    nested = param(params, "filter")
    if isinstance(nested, Mapping):
        raw_filter.update(nested)
    with _invalid_query():
        conditions = parse_filter(raw_filter, _user_field, strict=False)
        order = parse_order(
            {param(params, "sort") or "ID": param(params, "order") or "ASC"}, _user_field
        )
    users = [user for user in crm.state.users.values() if matches(user, conditions)]
    rows, total, next_start = page(sort_records(users, order), parse_start(param(params, "start")))
    return Reply([render_user(user) for user in rows], total, next_start)


METHODS: dict[str, Method] = {
    "crm.item.get": crm_item_get,
    "crm.item.list": crm_item_list,
    "crm.item.add": crm_item_add,
    "crm.item.update": crm_item_update,
    "crm.item.fields": crm_item_fields,
    "crm.category.list": crm_category_list,
    "crm.category.add": crm_category_add,
    "crm.contact.get": legacy_get(CONTACT),
    "crm.contact.list": legacy_list(CONTACT),
    "crm.contact.update": crm_contact_update,
    "crm.contact.fields": legacy_fields(CONTACT),
    "crm.contact.userfield.list": crm_contact_userfield_list,
    "crm.deal.add": crm_deal_add,
    "crm.deal.get": legacy_get(DEAL),
    "crm.deal.list": legacy_list(DEAL),
    "crm.deal.update": crm_deal_update,
    "crm.deal.fields": legacy_fields(DEAL),
    "crm.status.list": crm_status_list,
    "crm.lead.add": crm_lead_add,
    "crm.lead.get": legacy_get(LEAD),
    "crm.lead.list": legacy_list(LEAD),
    "tasks.task.add": tasks_task_add,
    "tasks.task.list": tasks_task_list,
    "crm.timeline.comment.add": crm_timeline_comment_add,
    "user.get": user_get,
}


# --- helpers ------------------------------------------------------------------------------


@contextmanager
def _invalid_query() -> Iterator[None]:
    """Turns a :class:`QueryError` into Bitrix24's ``INVALID_ARG_VALUE``."""
    try:
        yield
    except QueryError as exc:
        raise RestError(400, "INVALID_ARG_VALUE", str(exc)) from exc


@contextmanager
def _invalid_value(*, legacy: bool = False) -> Iterator[None]:
    """Turns a :class:`FieldValueError` into a 400: its own code for ``crm.item.*``, the empty
    code of the legacy methods otherwise."""
    try:
        yield
    except FieldValueError as exc:
        raise RestError(400, "" if legacy else exc.code, exc.description) from exc


def _fields(params: Params, *, legacy: bool = False) -> Mapping[str, Any]:
    raw = param(params, "fields")
    if isinstance(raw, Mapping):
        return raw
    if legacy:
        raise RestError(400, "", "The parameter 'fields' must be array.")
    raise RestError(400, "INVALID_ARG_VALUE", 'Required parameter "fields" is missing')


def _item_type(crm: Crm, params: Params) -> EntityType:
    etype = crm.entity_type(_int(param(params, "entityTypeId")) or 0)
    if etype is None:
        raise RestError(400, "NOT_FOUND", "Smart process not found")
    return etype


def _item(crm: Crm, etype: EntityType, params: Params) -> dict[str, Any]:
    item_id = _int(param(params, "id"))
    if item_id is None:
        raise RestError(400, "INVALID_ARG_VALUE", 'Required parameter "id" is missing')
    record = crm.get(etype.entity_type_id, item_id)
    if record is None:
        raise RestError(400, "NOT_FOUND", "Element not found")
    return record


def _legacy_record(crm: Crm, entity_type_id: int, params: Params) -> dict[str, Any]:
    entity_id = _int(param(params, "id"))
    if entity_id is None or entity_id <= 0:
        raise RestError(400, "", "ID is not defined or invalid.")
    record = crm.get(entity_type_id, entity_id)
    if record is None:
        raise RestError(400, "", "Not found")
    return record


def _named_fields(raw: Mapping[str, Any], resolve: Resolver) -> dict[str, Any]:
    """``fields`` keyed by UPPER storage names; unknown names are dropped, as Bitrix24 does."""
    named = {}
    for key, value in raw.items():
        spec = resolve(str(key))
        if spec is not None:
            named[spec.name] = value
    return named


def _original(params: Params) -> bool:
    return flag(param(params, "useOriginalUfNames"))


def _item_star(spec: FieldSpec) -> bool:
    return spec.type != "crm_multifield"


def _item_resolver(etype: EntityType) -> Resolver:
    def resolve(name: str) -> FieldSpec | None:
        spec = etype.resolve(name)
        return spec if spec is not None and _item_star(spec) else None

    return resolve


def _legacy_star(spec: FieldSpec) -> bool:
    return not spec.is_uf and spec.type != "crm_multifield"


def _task_field(name: str) -> FieldSpec | None:
    return TASK_FIELDS.get(name) or TASK_FIELDS.get(camel_to_upper(name))


def _user_field(name: str) -> FieldSpec | None:
    return USER_FIELDS.get(name.upper())


def _int(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _sortable(value: Any) -> tuple[int, Any]:
    text = str(value)
    return (0, int(text)) if text.isascii() and text.isdigit() else (1, text)
