"""What crm_sync creates for an answer: the fields of a lead or a task, and how to find it again.

Pure: no I/O. The clock (for a task's deadline) and the manager's name come in as arguments.

Every created entity carries the action's id, so that after an uncertain outcome the writer finds
it instead of creating it twice: a lead in `ORIGIN_ID` (with `ORIGINATOR_ID` = `b24-nps`), found
with a `crm.lead.list` filter on both; a task in `XML_ID` (its external identifier) and in a last
line of its description, found among the tasks bound to the NPS item (`UF_CRM_TASK` is the
filter `tasks.task.list` documents for CRM bindings) by either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.events import (
    DEAL_ENTITY_TYPE_ID,
    CrmWritten,
    RouteAction,
    ScoredAnswer,
    WriteOutcome,
    derived_id,
)
from shared.portal_config import DEFAULT_DEADLINE_HOURS, PortalConfig

ORIGINATOR = "b24-nps"
LEAD_ACTIONS = ("service", "marketing")
TASK_ACTION = "task"
CONTACT_ACTION = "contact"
STAGE_ACTION = "stage"


class ActionError(ValueError):
    """The action can never be carried out as given (a bad parameter): dead-letter it."""


def item_binding(entity_type_id: int, item_id: int) -> str:
    """The CRM binding code of a smart-process item (`T` + type id in hex, e.g. `T40e_77`) or
    of a deal (`D_77`)."""
    if entity_type_id == DEAL_ENTITY_TYPE_ID:
        return f"D_{item_id}"
    return f"T{entity_type_id:x}_{item_id}"


def crm_bindings(answer: ScoredAnswer) -> list[str]:
    """`UF_CRM_TASK` of a task about `answer`: its contact and the NPS item itself."""
    bindings = [] if answer.contact_id is None else [f"C_{answer.contact_id}"]
    return [*bindings, item_binding(answer.entity_type_id, answer.item_id)]


def _positive_int(params: Mapping[str, Any], key: str, default: int | None) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ActionError(f"params.{key} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ActionError(f"params.{key} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ActionError(f"params.{key} must be a positive integer, got {value!r}")
    return number


def responsible_for(action: RouteAction, config: PortalConfig) -> int:
    """Who gets the lead or task: `params.responsible_id`, else the routing section's default."""
    routing = config.routing
    defaults = {
        "service": routing.service.responsible_id,
        "marketing": routing.marketing.responsible_id,
        TASK_ACTION: None if routing.task is None else routing.task.responsible_id,
    }
    if action.action not in defaults:
        raise ActionError(f"crm_sync creates nothing for action {action.action!r}")
    default = defaults[action.action]
    if default is None and "responsible_id" not in action.params:
        raise ActionError(
            "params.responsible_id is missing and routing.task (the head of sales) is not set"
        )
    return _positive_int(action.params, "responsible_id", default)


def deadline_for(action: RouteAction, config: PortalConfig, now: datetime) -> datetime:
    task = config.routing.task
    default = DEFAULT_DEADLINE_HOURS if task is None else task.deadline_hours
    hours = _positive_int(action.params, "deadline_hours", default)
    return now + timedelta(hours=hours)


def score_text(answer: ScoredAnswer) -> str:
    if answer.scale == "binary":
        return "satisfied" if answer.score == 1 else "not satisfied"
    return f"{answer.score}/10"


def _default_title(action: RouteAction) -> str:
    answer = action.answer
    what = {"service": "service request", "marketing": "promoter", TASK_ACTION: "detractor"}
    return (
        f"NPS {score_text(answer)}, {what.get(action.action, action.action)}: {answer.product_name}"
    )


def title_for(action: RouteAction) -> str:
    """`params.title` (the router renders it), else product and score."""
    title = action.params.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    return _default_title(action)


def _source(answer: ScoredAnswer) -> str:
    if answer.entity_type_id == DEAL_ENTITY_TYPE_ID:
        return f"Survey answer: NPS deal {answer.item_id} ({answer.segment})"
    return f"Survey answer: item {answer.item_id} of smart process {answer.entity_type_id}"


def _summary(answer: ScoredAnswer) -> list[str]:
    return [
        f"Score: {score_text(answer)} ({answer.category})",
        f"Product: {answer.product_name} ({answer.sku})",
        f"Customer comment: {answer.comment.strip() if answer.comment else '(none)'}",
        f"Service requested: {'yes' if answer.service_request else 'no'}",
        f"Answered: {answer.submitted_at.isoformat(timespec='minutes')}",
        _source(answer),
    ]


def lead_fields(action: RouteAction, responsible_id: int) -> dict[str, Any]:
    """`crm.lead.add` params for a service or marketing lead (the responsible is notified)."""
    answer = action.answer
    fields: dict[str, Any] = {
        "TITLE": title_for(action),
        "ASSIGNED_BY_ID": responsible_id,
        "COMMENTS": "\n".join(_summary(answer)),
        "SOURCE_DESCRIPTION": f"NPS survey answer (item {answer.item_id})",
        "ORIGIN_ID": action.action_id,
        "ORIGINATOR_ID": ORIGINATOR,
    }
    if answer.contact_id is not None:
        fields["CONTACT_ID"] = answer.contact_id
    return {"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}}


def lead_lookup(action_id: str) -> dict[str, Any]:
    """`crm.lead.list` params that find the lead created for `action_id`, if any."""
    return {
        "filter": {"ORIGIN_ID": action_id, "ORIGINATOR_ID": ORIGINATOR},
        "select": ["ID"],
        "start": -1,
    }


def manager_name(user: Mapping[str, Any] | None, user_id: int | None) -> str:
    """How a task names the customer's responsible manager (a `user.get` row)."""
    if user_id is None:
        return "not assigned"
    if user is None:
        return f"user #{user_id} (not found)"
    name = " ".join(str(part).strip() for part in (user.get("NAME"), user.get("LAST_NAME")) if part)
    return f"{name or 'user'} (#{user_id})"


def task_fields(
    action: RouteAction, responsible_id: int, manager: str, deadline: datetime
) -> dict[str, Any]:
    """`tasks.task.add` params for the head of sales."""
    answer = action.answer
    lines = [
        *_summary(answer),
        f"Responsible manager: {manager}",
        f"Contact: {answer.contact_id if answer.contact_id is not None else '(none)'}",
    ]
    return task_params(
        action.action_id,
        title=title_for(action),
        lines=lines,
        responsible_id=responsible_id,
        deadline=deadline,
        bindings=crm_bindings(answer),
    )


def task_params(
    action_id: str,
    *,
    title: str,
    lines: Sequence[str],
    responsible_id: int,
    deadline: datetime,
    bindings: Sequence[str],
) -> dict[str, Any]:
    """`tasks.task.add` params of a task created for `action_id`: it carries the id in `XML_ID`
    and in the description's last line, so that `found_task` finds it again."""
    return {
        "fields": {
            "TITLE": title,
            "DESCRIPTION": "\n".join([*lines, task_marker(action_id)]),
            "RESPONSIBLE_ID": responsible_id,
            "DEADLINE": deadline.isoformat(timespec="seconds"),
            "UF_CRM_TASK": list(bindings),
            "XML_ID": action_id,
        }
    }


def task_marker(action_id: str) -> str:
    """The description line that names the action a task was created for."""
    return f"b24-nps action {action_id}"


def task_lookup(action: RouteAction) -> dict[str, Any]:
    """`tasks.task.list` params listing the tasks bound to the action's NPS item."""
    answer = action.answer
    return tasks_bound_to(item_binding(answer.entity_type_id, answer.item_id))


def tasks_bound_to(binding: str, *, newest_first: bool = False) -> dict[str, Any]:
    """`tasks.task.list` params listing the tasks bound to a CRM entity (`D_7`, `C_3`, ...);
    `newest_first` for an entity with many tasks, where one just created is on the first page."""
    return {
        "filter": {"UF_CRM_TASK": binding},
        "select": ["ID", "DESCRIPTION", "XML_ID"],
        "order": {"ID": "DESC" if newest_first else "ASC"},
    }


def _row_id(row: Any) -> int | None:
    value = row.get("ID", row.get("id")) if isinstance(row, dict) else None
    return int(value) if value is not None else None


def found_lead(result: Any) -> int | None:
    """The lead id in a `lead_lookup` result (a list of rows), None when there is none."""
    rows = result if isinstance(result, list) else []
    return next((found for row in rows if (found := _row_id(row)) is not None), None)


def found_task(result: Any, action_id: str) -> int | None:
    """The task created for `action_id` in a `task_lookup` result (`{"tasks": [...]}`, with
    camelCase keys), None when there is none."""
    rows = result.get("tasks") if isinstance(result, dict) else None
    marker = task_marker(action_id)
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        xml_id = row.get("xmlId", row.get("XML_ID"))
        description = str(row.get("description", row.get("DESCRIPTION")) or "")
        if xml_id == action_id or marker in description.splitlines():
            return _row_id(row)
    return None


def created_id(method: str, result: Any) -> int:
    """The new entity's id: `crm.lead.add` answers it directly, `tasks.task.add` as
    `{"task": {"id": ...}}`."""
    value = result
    if method == "tasks.task.add" and isinstance(result, dict):
        task = result.get("task")
        value = task.get("id", task.get("ID")) if isinstance(task, dict) else None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ActionError(f"{method} answered without a usable id: {result!r}") from None


def written_event(
    action: RouteAction,
    outcome: WriteOutcome,
    *,
    entity_type: str | None,
    entity_id: int | None,
    details: Mapping[str, Any],
) -> CrmWritten:
    """The `crm.written.<action>` event of an action; the same id every time for one action."""
    return CrmWritten(
        event_id=derived_id("crm.written", action.action_id),
        correlation_id=action.correlation_id,
        causation_id=str(action.event_id),
        action_id=action.action_id,
        action=action.action,
        outcome=outcome,
        entity_type=entity_type,
        entity_id=entity_id,
        details=dict(details),
    )
