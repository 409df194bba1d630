"""The REST methods: each takes the portal's :class:`Crm` and the request parameters and
returns a :class:`Reply` or raises :class:`RestError` (HTTP 400 with Bitrix24's body)."""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from services.sandbox.crm import Crm
from services.sandbox.errors import RestError
from services.sandbox.naming import camel_to_upper
from services.sandbox.products import owner_entity_type, owner_filter, row_matches, sort_rows
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
from services.sandbox.schema import (
    LEAD_STATUSES,
    STAGE_HISTORY_FIELDS,
    TASK_FIELDS,
    USER_FIELDS,
    EntityType,
    FieldSpec,
)
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
TASK_STATUSES = frozenset({1, 2, 3, 4, 5, 6, 7})
"""1 new, 2 pending, 3 in progress, 4 supposedly completed, 5 completed, 6 deferred, 7
declined."""


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


def crm_lead_update(crm: Crm, params: Params) -> Reply:
    """`true`; a person's edit of a lead (e.g. its ``STATUS_ID``) as Bitrix24 takes it."""
    record = _legacy_record(crm, LEAD, params)
    etype = crm.state.entity_types[LEAD]
    values = _named_fields(_fields(params, legacy=True), etype.fields.get)
    status = values.get("STATUS_ID")
    if status is not None and str(status) not in {s.status_id for s in LEAD_STATUSES}:
        raise RestError(400, "", f"Field 'STATUS_ID': value '{status}' is not allowed")
    with _invalid_value(legacy=True):
        crm.update(LEAD, record["ID"], values, method="crm.lead.update")
    return Reply(True)


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


_SEMANTIC_WORDS = {"S": "success", "F": "failure"}


def crm_status_list(crm: Crm, params: Params) -> Reply:
    """The lead statuses (`ENTITY_ID` `STATUS`, with `EXTRA.SEMANTICS` in words) and the deal
    funnels' stages (`ENTITY_ID` `DEAL_STAGE` or `DEAL_STAGE_<id>`), filtered by equality on any
    of the returned keys."""
    etype = crm.state.entity_types[DEAL]
    rows: list[dict[str, Any]] = [
        {
            "ID": str(index + 1),
            "ENTITY_ID": "STATUS",
            "STATUS_ID": status.status_id,
            "NAME": status.name,
            "SORT": str(status.sort),
            "SYSTEM": "Y",
            "CATEGORY_ID": None,
            "SEMANTICS": status.semantics,
            "EXTRA": {"SEMANTICS": _SEMANTIC_WORDS.get(status.semantics or "", "process")},
        }
        for index, status in enumerate(LEAD_STATUSES)
    ]
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


def crm_stagehistory_list(crm: Crm, params: Params) -> Reply:
    """Deal stage history (entityTypeId 2): a record when a deal is created (``TYPE_ID`` 1),
    moved to an in-progress stage (2), to a final one (3) or to another funnel (5); only the
    records of stages of each deal's current funnel. Filter, order, select and pages of 50."""
    entity_type_id = _int(param(params, "entityTypeId"))
    if entity_type_id != DEAL:
        etype = crm.entity_type(entity_type_id or 0)
        name = etype.code.upper() if etype is not None else str(param(params, "entityTypeId"))
        raise RestError(400, "ENTITY_TYPE_NOT_SUPPORTED", f"{name} entity is not supported")
    resolve = STAGE_HISTORY_FIELDS.get
    with _invalid_query():
        conditions = parse_filter(param(params, "filter"), resolve)
        order = parse_order(param(params, "order"), resolve)
    fields = select_fields(param(params, "select"), STAGE_HISTORY_FIELDS, resolve, lambda _: True)
    found = [entry for entry in crm.stage_history() if matches(entry, conditions)]
    rows, total, next_start = page(
        sort_records(found, order or [("ID", False)]), parse_start(param(params, "start"))
    )
    items = [{name: row[name] for name in fields} for row in rows]
    return Reply({"items": items}, total, next_start)


# --- product rows -------------------------------------------------------------------------


def crm_item_productrow_list(crm: Crm, params: Params) -> Reply:
    """Rows of one CRM object (filter ``=ownerType``, ``=ownerId``; conditions on ``id`` and
    ``productId``), ordered by ``sort`` (or ``id``); no ``select``; pages of 50."""
    raw_filter = param(params, "filter")
    owner_type, owner_id = owner_filter(raw_filter)
    _product_row_owner(crm, owner_type, owner_id, missing="ACCESS_DENIED")
    rows = [row for row in crm.product_rows(owner_type, owner_id) if row_matches(row, raw_filter)]
    start = parse_start(param(params, "start"))
    chosen, total, next_start = page(sort_rows(rows, param(params, "order")), start)
    return Reply({"productRows": chosen}, None if start < 0 else total, next_start)


def crm_item_productrow_set(crm: Crm, params: Params) -> Reply:
    """Replace all rows of a CRM object; a deal's amount becomes their total."""
    owner_type = param(params, "ownerType")
    owner_id = _int(param(params, "ownerId"))
    raw_rows = param(params, "productRows")
    for name, value in (
        ("ownerType", owner_type),
        ("ownerId", owner_id),
        ("productRows", raw_rows),
    ):
        if value in (None, ""):
            raise RestError(400, "100", f"Could not find value for parameter {{{name}}}")
    assert owner_id is not None
    if isinstance(raw_rows, Mapping):
        raw_rows = list(raw_rows.values())
    if not isinstance(raw_rows, list):
        raise RestError(400, "INVALID_ARG_VALUE", "productRows: expected an array of product rows")
    _product_row_owner(crm, str(owner_type), owner_id, missing="OWNER_NOT_FOUND")
    with _invalid_value():
        rows = crm.set_product_rows(
            str(owner_type), owner_id, raw_rows, method="crm.item.productrow.set"
        )
    return Reply({"productRows": sort_rows(rows, None)})


def _product_row_owner(crm: Crm, owner_type: str, owner_id: int, *, missing: str) -> None:
    """The owner must exist. ``crm.item.productrow.list`` answers ``ACCESS_DENIED`` for a
    missing owner and for a type without product rows; ``set`` names what is wrong."""
    entity_type_id = owner_entity_type(owner_type)
    if entity_type_id is None:
        if missing == "ACCESS_DENIED":
            raise RestError(400, "ACCESS_DENIED", "Access denied")
        raise RestError(
            400,
            "ENTITY_TYPE_NOT_SUPPORTED",
            f"ownerType {owner_type!r}: expected D (deal), L (lead), Q, SI or T<hex type id>",
        )
    if crm.entity_type(entity_type_id) is None or crm.get(entity_type_id, owner_id) is None:
        if missing == "ACCESS_DENIED":
            raise RestError(400, "ACCESS_DENIED", "Access denied")
        raise RestError(400, "OWNER_NOT_FOUND", "Owner was not found")


# --- automation ---------------------------------------------------------------------------

TARGET_TYPES = {
    "LEAD": 1,
    "DEAL": DEAL,
    "CONTACT": CONTACT,
    "COMPANY": 4,
    "QUOTE": 7,
    "ORDER": 14,
    "SMART_INVOICE": 31,
}


def crm_automation_trigger(crm: Crm, params: Params) -> Reply:
    """Fire the automation trigger ``code`` on ``target`` (``DEAL_<id>``, split at the last
    underscore). ``true`` even for a missing item, as with an administrator's webhook; the
    call is recorded (``/sandbox/triggers``, the deal's page)."""
    target = params.get("target")  # only these exact names are read
    code = params.get("code")
    if target in (None, ""):
        raise RestError(400, "", "Target is not set.")
    type_name, _, raw_id = str(target).rpartition("_")
    if not type_name or not raw_id.isdigit():
        raise RestError(400, "", "Incorrect target format.")
    entity_type_id = TARGET_TYPES.get(type_name.upper())
    if entity_type_id is None and type_name.upper().startswith("DYNAMIC_"):
        dynamic = crm.entity_type(_int(type_name[len("DYNAMIC_") :]) or 0)
        entity_type_id = dynamic.entity_type_id if dynamic is not None and dynamic.dynamic else None
    if entity_type_id is None:
        raise RestError(400, "", "Target is not found.")
    crm.fire_trigger(
        str(target), None if code in (None, "") else str(code), entity_type_id, int(raw_id)
    )
    return Reply(True)


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


def _task(crm: Crm, params: Params) -> dict[str, Any]:
    task_id = _int(param(params, "taskId"))
    if task_id is None or task_id not in crm.state.tasks:
        raise RestError(400, "ERROR_CORE", "Task not found or not accessible")
    return crm.state.tasks[task_id]


def _task_reply(task: Mapping[str, Any]) -> Reply:
    standard = [name for name, spec in TASK_FIELDS.items() if not spec.is_uf]
    return Reply({"task": render_task(task, standard)})


def tasks_task_update(crm: Crm, params: Params) -> Reply:
    """A person's edit of a task: ``taskId`` and ``fields`` (e.g. ``STATUS``)."""
    task = _task(crm, params)
    raw = param(params, "fields")
    if not isinstance(raw, Mapping):
        raise RestError(400, "100", "Could not find value for parameter {fields}")
    values = _named_fields(raw, _task_field)
    status = values.get("STATUS")
    if status is not None and _int(status) not in TASK_STATUSES:
        raise RestError(400, "ERROR_CORE", f"Unknown task status {status!r}")
    with _invalid_value():
        updated = crm.update_task(task["ID"], values)
    return _task_reply(updated)


def task_status_method(status: int) -> Method:
    """``tasks.task.start`` (3) and ``tasks.task.complete`` (5): ``taskId``, the task after."""

    def move(crm: Crm, params: Params) -> Reply:
        task = _task(crm, params)
        return _task_reply(crm.update_task(task["ID"], {"STATUS": status}))

    return move


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


LOG_MESSAGE_FIELDS = ("entityTypeId", "entityId", "title", "text", "iconCode")


def crm_timeline_logmessage_add(crm: Crm, params: Params) -> Reply:
    """A log entry in an item's timeline (all five fields required)."""
    fields = param(params, "fields")
    if not isinstance(fields, Mapping):
        raise RestError(400, "100", "Could not find value for parameter {fields}")
    missing = [name for name in LOG_MESSAGE_FIELDS if str(fields.get(name) or "").strip() == ""]
    if missing:
        raise RestError(400, "100", f"Required fields are not provided: {', '.join(missing)}")
    entity_type_id = _int(fields["entityTypeId"])
    entity_id = _int(fields["entityId"])
    etype = crm.entity_type(entity_type_id or 0)
    if etype is None or entity_id is None or crm.get(etype.entity_type_id, entity_id) is None:
        raise RestError(
            400,
            "OWNER_NOT_FOUND",
            f"The CRM object with entityTypeId {fields['entityTypeId']} and entityId"
            f" {fields['entityId']} does not exist",
        )
    message = crm.add_log_message(
        etype.entity_type_id,
        entity_id,
        str(fields["title"]),
        str(fields["text"]),
        str(fields["iconCode"]),
    )
    shown = ("id", "created", "authorId", "title", "text", "iconCode")
    return Reply({"logMessage": {name: message[name] for name in shown}})


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
    "crm.lead.update": crm_lead_update,
    "tasks.task.add": tasks_task_add,
    "tasks.task.list": tasks_task_list,
    "tasks.task.update": tasks_task_update,
    "tasks.task.start": task_status_method(3),
    "tasks.task.complete": task_status_method(5),
    "crm.timeline.comment.add": crm_timeline_comment_add,
    "crm.timeline.logmessage.add": crm_timeline_logmessage_add,
    "crm.stagehistory.list": crm_stagehistory_list,
    "crm.item.productrow.list": crm_item_productrow_list,
    "crm.item.productrow.set": crm_item_productrow_set,
    "crm.automation.trigger": crm_automation_trigger,
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
