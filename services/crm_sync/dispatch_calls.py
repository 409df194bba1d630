"""What crm_sync does for dispatch's commands (docs/crm_sync.md, Dispatch's commands): the portal
calls of each, and what the portal's answers mean. Pure: no I/O; the clock comes in as an
argument.

- `nps_deal`: the NPS deal of a deal survey's request, created once per request. It carries the
  request id in `originId` (with `originatorId` = `b24-nps`), so the deal is found again by a
  `crm.item.list` filter before it is ever created (in the same request as the checks that the
  contact and the funnel exist).
- `survey_send`: the personal link into the deal's link field, then the automation trigger (or
  the move to a stage) and a timeline entry, in one request that halts at the first failed
  command. What the link field held right before a send (`Observed`) is recorded first; after an
  uncertain outcome the field read back tells whether the send ran.
- `call_task`: a task for the responsible employee, created once per command (`XML_ID` = the
  command id, found among the tasks bound to the deal or the contact).
- `robot_answer`: `bizproc.event.send` answering the business process that launched the "Send
  NPS survey" robot (its `event_token`), once per command.

A command that cannot be carried out on this portal as given (no such deal or contact, a field
the deal does not have, a stage of another funnel, a value the portal refuses) raises
`RefusedError`: its outcome is `failed` with the reason, which dispatch records in its register.
It is never dead-lettered: repeating it could not help.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from services.crm_sync.entities import ORIGINATOR, task_params, tasks_bound_to
from shared.deal_stages import read_funnel, status_entity_id
from shared.events import (
    DEAL_ENTITY_TYPE_ID,
    CallTask,
    CrmWritten,
    DispatchCommand,
    NewNpsDeal,
    PortalSend,
    RobotAnswer,
    WriteOutcome,
    derived_id,
)

TIMELINE_ICON = "info"
"""`iconCode` of the timeline entry (`crm.timeline.logmessage.add` requires one)."""

PORTAL_WIDE_CODES = frozenset(
    {
        "NO_AUTH_FOUND",
        "EXPIRED_TOKEN",
        "INVALID_CREDENTIALS",
        "INSUFFICIENT_SCOPE",
        "METHOD_CONFIRM_WAITING",
        "METHOD_CONFIRM_DENIED",
        "USER_ACCESS_ERROR",
        "WRONG_AUTH_TYPE",
        "ERROR_METHOD_NOT_FOUND",
        "INVALID_REQUEST",
        "PORTAL_DELETED",
        "OVERLOAD_LIMIT",
        "ERROR_BATCH_LENGTH_EXCEEDED",
        "ERROR_BATCH_METHOD_NOT_ALLOWED",
    }
)
"""Permanent errors that concern the webhook or the portal, not one command (authorisation, a
missing scope or method, a blocked portal): the message is dead-lettered, to be replayed once
an operator has fixed the portal, rather than every request being marked failed."""

_STAGE_CATEGORY = re.compile(r"C(\d+):")


class RefusedError(ValueError):
    """The command cannot be carried out on this portal as given: outcome `failed`, with this
    message as `details.reason`."""


class Call(NamedTuple):
    """One portal call: its name in the request, the method and its params."""

    name: str
    method: str
    params: dict[str, Any]


def portal_wide(code: str) -> bool:
    """Whether a permanent error's code concerns the webhook or the portal (dead-letter), not
    the command (`failed`)."""
    return code.strip().upper() in PORTAL_WIDE_CODES


def dispatch_written(
    command: DispatchCommand,
    outcome: WriteOutcome,
    *,
    entity_type: str,
    entity_id: int | None,
    details: Mapping[str, Any],
) -> CrmWritten:
    """The `crm.written.<action>` event of a command (`action_id` = `command_id`); the same id
    every time for one command."""
    return CrmWritten(
        event_id=derived_id("crm.written", command.command_id),
        correlation_id=command.correlation_id,
        causation_id=str(command.event_id),
        action_id=command.command_id,
        action=command.action,
        outcome=outcome,
        entity_type=entity_type,
        entity_id=entity_id,
        details={"request_id": str(command.request_id), **details},
    )


def robot_answer_params(answer: RobotAnswer) -> dict[str, Any]:
    """`bizproc.event.send` params answering the robot's launch: its return values `sent`
    (`Y`/`N`) and `reason`, and a line for the business process's log."""
    reason = answer.reason or ""
    return {
        "EVENT_TOKEN": answer.event_token,
        "RETURN_VALUES": {"sent": "Y" if answer.sent else "N", "reason": reason},
        "LOG_MESSAGE": "b24-nps: NPS survey sent"
        if answer.sent
        else f"b24-nps: NPS survey not sent: {reason}",
    }


def _rows(result: Any) -> list[Any]:
    return result if isinstance(result, list) else []


def item_of(result: Any) -> Mapping[str, Any]:
    """The item of a `crm.item.get` result (`{"item": {...}}`)."""
    item = result.get("item") if isinstance(result, Mapping) else None
    return item if isinstance(item, Mapping) else {}


def deal_read(deal_id: int) -> dict[str, Any]:
    """`crm.item.get` params of a deal, custom fields under their original names."""
    return {"entityTypeId": DEAL_ENTITY_TYPE_ID, "id": deal_id, "useOriginalUfNames": "Y"}


def funnel_read(category_id: int) -> dict[str, Any]:
    """`crm.status.list` params listing a deal category's stages."""
    return {"filter": {"ENTITY_ID": status_entity_id(category_id)}}


def contact_read(contact_id: int) -> dict[str, Any]:
    """`crm.contact.list` params that find the contact (an empty list: no such contact, or one
    the webhook's user cannot see)."""
    return {"filter": {"ID": contact_id}, "select": ["ID"]}


def found(result: Any) -> bool:
    """Whether a `contact_read` found the contact."""
    return bool(_rows(result))


# --- nps_deal -------------------------------------------------------------------------------


def nps_deal_lookup(command: DispatchCommand) -> dict[str, Any]:
    """`crm.item.list` params that find the NPS deal created for the command's request."""
    return {
        "entityTypeId": DEAL_ENTITY_TYPE_ID,
        "filter": {"=originatorId": ORIGINATOR, "=originId": str(command.request_id)},
        "select": ["id"],
        "order": {"id": "ASC"},
    }


def nps_deal_step(
    deal: NewNpsDeal, *, existing: int | None, contact: bool, stages: Any
) -> int | None:
    """The deal created for the request before (its id), or None: create it now. `contact`:
    whether the contact was found; `stages`: the funnel's `crm.status.list` rows. Raises
    `RefusedError` when the deal cannot be created as asked (the portal itself would put a deal
    of an unknown funnel into the default one without a word)."""
    if existing is not None:
        return existing
    if not contact:
        raise RefusedError(
            f"contact {deal.contact_id} (nps_deal.contact_id) does not exist on the portal"
            " or the webhook's user cannot see it"
        )
    if not read_funnel(deal.category_id, _rows(stages)).stages:
        raise RefusedError(
            f"deal category {deal.category_id} (nps_deal.category_id) has no stages on the"
            " portal: no such funnel"
        )
    return None


def nps_deal_add(command: DispatchCommand, deal: NewNpsDeal) -> dict[str, Any]:
    """`crm.item.add` params of the NPS deal (entityTypeId 2; custom fields by their original
    names). No stage: the portal puts a new deal at its funnel's first stage. The contact goes
    as `contactIds` (the deal's contact list, as crm.item documents it) and as `contactId` (the
    single-contact form older portals and the sandbox read), both with the same value."""
    fields: dict[str, Any] = {
        "title": deal.title,
        "categoryId": deal.category_id,
        "contactIds": [deal.contact_id],
        "contactId": deal.contact_id,
        "originatorId": ORIGINATOR,
        "originId": str(command.request_id),
    }
    if deal.company_id is not None:
        fields["companyId"] = deal.company_id
    if deal.responsible_id is not None:
        fields["assignedById"] = deal.responsible_id
    if deal.sale_deal_id is not None and deal.sale_deal_field:
        fields[deal.sale_deal_field] = deal.sale_deal_id
    return {"entityTypeId": DEAL_ENTITY_TYPE_ID, "fields": fields, "useOriginalUfNames": "Y"}


# --- survey_send ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the deal's link field held right before a send went out (recorded before it)."""

    link: Any

    def to_json(self) -> dict[str, Any]:
        return {"link": self.link}

    @classmethod
    def from_json(cls, data: Any) -> Observed | None:
        if not isinstance(data, Mapping) or "link" not in data:
            return None
        return cls(data["link"])


@dataclass(frozen=True)
class Recovered:
    """An earlier attempt's send ran (the link field holds the url it wrote): nothing to send."""


@dataclass(frozen=True)
class Send:
    """Send these calls, in one request that halts at the first failed one."""

    calls: tuple[Call, ...]
    current: Any
    """What the link field holds now (recorded as `Observed` before the send)."""


def check_send(send: PortalSend) -> None:
    """Refuse a send that names nothing to write (exactly one way to deliver, trigger or stage,
    is checked by the event model itself)."""
    if not send.link_field.strip():
        raise RefusedError(
            "survey_send.link_field is empty: name the deal field the link goes into"
        )
    if not send.url.strip():
        raise RefusedError("survey_send.url is empty: there is no link to send")


def stage_category(stage_id: str) -> int:
    """The deal category a stage id belongs to: `C<id>:…` in category id, else the default
    funnel (0)."""
    match = _STAGE_CATEGORY.match(stage_id)
    return int(match.group(1)) if match else 0


def send_reads(send: PortalSend) -> list[Call]:
    """What a send reads first, in one request: the deal and, with a stage, that stage's
    funnel."""
    reads = [Call("deal", "crm.item.get", deal_read(send.deal_id))]
    if send.stage is not None:
        reads.append(Call("stages", "crm.status.list", funnel_read(stage_category(send.stage))))
    return reads


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def plan_send(
    send: PortalSend, deal: Mapping[str, Any] | None, stages: Any, observed: Observed | None
) -> Recovered | Send:
    """What to do about a send, given the deal as read now (None: it does not exist), the
    funnel's stages (with a stage) and what the link field held before an earlier attempt's
    send (None: no send was attempted yet). Raises `RefusedError` when it cannot be carried out."""
    deal_id = send.deal_id
    if deal is None:
        raise RefusedError(f"deal {deal_id} (survey_send.deal_id) does not exist on the portal")
    if send.link_field not in deal:
        raise RefusedError(
            f"deal {deal_id} has no field {send.link_field} (survey_send.link_field):"
            " the portal would ignore the link"
        )
    current = deal[send.link_field]
    if observed is not None and current == send.url and observed.link != send.url:
        return Recovered()
    if send.stage is not None:
        wanted = stage_category(send.stage)
        if read_funnel(wanted, _rows(stages)).stage(send.stage) is None:
            raise RefusedError(
                f"stage {send.stage} (survey_send.stage) is not a stage of deal category {wanted}"
            )
        category = _int(deal.get("categoryId"))
        if category != wanted:
            raise RefusedError(
                f"stage {send.stage} (survey_send.stage) belongs to deal category {wanted} but"
                f" deal {deal_id} is in category {category}: the portal would ignore the move"
            )
        if deal.get("stageId") == send.stage:
            raise RefusedError(
                f"deal {deal_id} is at stage {send.stage} already: moving it there again would"
                " start no robot"
            )
    return Send(send_calls(send), current)


def send_calls(send: PortalSend) -> tuple[Call, ...]:
    """The send's request: `link` (the link into the deal), `deliver` (the automation trigger,
    or the move to the stage), then `timeline` (when `timeline_title` is set)."""
    deal = send.deal_id
    calls = [
        Call(
            "link",
            "crm.item.update",
            {
                "entityTypeId": DEAL_ENTITY_TYPE_ID,
                "id": deal,
                "fields": {send.link_field: send.url},
                "useOriginalUfNames": "Y",
            },
        )
    ]
    if send.stage is not None:
        deliver = Call(
            "deliver",
            "crm.item.update",
            {"entityTypeId": DEAL_ENTITY_TYPE_ID, "id": deal, "fields": {"stageId": send.stage}},
        )
    else:
        deliver = Call(
            "deliver", "crm.automation.trigger", {"target": f"DEAL_{deal}", "code": send.trigger}
        )
    calls.append(deliver)
    if send.timeline_title:
        text = send.timeline_text or send.timeline_title
        calls.append(
            Call(
                "timeline",
                "crm.timeline.logmessage.add",
                {
                    "fields": {
                        "entityTypeId": DEAL_ENTITY_TYPE_ID,
                        "entityId": deal,
                        "title": send.timeline_title,
                        "text": text,
                        "iconCode": TIMELINE_ICON,
                    }
                },
            )
        )
    return tuple(calls)


def send_details(send: PortalSend) -> dict[str, Any]:
    """What `crm.written.survey_send` tells about a send besides its outcome."""
    via = {"stage": send.stage} if send.stage is not None else {"trigger": send.trigger}
    return {"deal_id": send.deal_id, "reminder": send.reminder, **via}


def timeline_id(result: Any) -> int | None:
    """The id of the entry `crm.timeline.logmessage.add` added."""
    entry = result.get("logMessage") if isinstance(result, Mapping) else None
    return _int(entry.get("id")) if isinstance(entry, Mapping) else None


# --- call_task ------------------------------------------------------------------------------


def call_task_bindings(task: CallTask) -> list[str]:
    """`UF_CRM_TASK` of the call task: the deal and the contact (the event model requires at
    least one, so the task can always be found again)."""
    bindings = [] if task.deal_id is None else [f"D_{task.deal_id}"]
    if task.contact_id is not None:
        bindings.append(f"C_{task.contact_id}")
    return bindings


def call_task_lookup(task: CallTask) -> dict[str, Any]:
    """`tasks.task.list` params listing the tasks bound to the call task's deal (else its
    contact), the newest first."""
    return tasks_bound_to(call_task_bindings(task)[0], newest_first=True)


def call_task_step(
    task: CallTask, *, existing: int | None, deal: bool | None, contact: bool | None
) -> int | None:
    """The task created for the command before (its id), or None: create it now. `deal` and
    `contact`: whether they were found (None: not asked about)."""
    if existing is not None:
        return existing
    if deal is False:
        raise RefusedError(f"deal {task.deal_id} (call_task.deal_id) does not exist on the portal")
    if contact is False:
        raise RefusedError(
            f"contact {task.contact_id} (call_task.contact_id) does not exist on the portal"
            " or the webhook's user cannot see it"
        )
    return None


def call_task_add(command_id: str, task: CallTask, now: datetime) -> dict[str, Any]:
    """`tasks.task.add` params of the call task (deadline: `deadline_hours` from `now`)."""
    return task_params(
        command_id,
        title=task.title,
        lines=_lines(task.description),
        responsible_id=task.responsible_id,
        deadline=now + timedelta(hours=task.deadline_hours),
        bindings=call_task_bindings(task),
    )


def _lines(text: str) -> Sequence[str]:
    return [text] if text else []
