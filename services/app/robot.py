"""The "Send NPS survey" robot (docs/app.md, The robot): registered on every portal the
application is installed on, and its calls taken.

- **Registration** (`Robots.register`, at install, next to the event bindings): one robot for
  deals and one for the NPS smart process (the portal's own configuration's:
  `PortalSmartProcess`; `bizproc.robot.add` takes one `DOCUMENT_TYPE`), with the properties
  `survey`, `channel` (`email` / `portal`) and `delay_minutes`, the return values `sent`
  (`Y`/`N`) and `reason`, `USE_SUBSCRIPTION` so the business process waits for the
  answer, and the application's own `/app/robot` as `HANDLER`. `bizproc.robot.list` first: what
  is registered already is left alone, so installing twice registers nothing twice.
- **A call** (`RobotDoor.take`): the portal named by `auth[member_id]` must be installed and the
  call must carry its `application_token` (stored at install, compared in constant time), else
  403 naming the field. The call becomes `robot.called` in the outbox, its id derived from the
  portal and the launch's `event_token`, so a repeated call is the same message; dispatch asks
  once per `event_token` and answers the business process (`bizproc.event.send` by crm_sync).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.app.lifecycle import LifecycleError, same_token
from shared import portal_store
from shared.bitrix24 import Bitrix24Client, PermanentBitrix24Error
from shared.bitrix24.tokens import TokenBook
from shared.events import DEAL_ENTITY_TYPE_ID, PortalRef, RobotCalled, derived_id
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.portal_config import ConfigError, PortalConfig

log = get_logger(__name__)

DEAL_ROBOT = "b24nps_send_survey"
NPS_ROBOT = "b24nps_send_survey_nps"
DEAL_DOCUMENT = ["crm", "CCrmDocumentDeal", "DEAL"]
DYNAMIC_DOCUMENT = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"
PROPERTIES: dict[str, dict[str, Any]] = {
    "survey": {
        "Name": {"en": "Survey (its name in the portal's settings)", "ru": "Опрос (название)"},
        "Type": "string",
        "Required": "Y",
        "Multiple": "N",
    },
    "channel": {
        "Name": {"en": "Channel", "ru": "Канал"},
        "Type": "select",
        "Options": {"email": "E-mail", "portal": "Portal (the deal's link field and robots)"},
        "Default": "email",
        "Required": "N",
        "Multiple": "N",
    },
    "delay_minutes": {
        "Name": {"en": "Delay, minutes", "ru": "Задержка, минут"},
        "Type": "int",
        "Default": "0",
        "Required": "N",
        "Multiple": "N",
    },
}
RETURN_PROPERTIES: dict[str, dict[str, Any]] = {
    "sent": {"Name": {"en": "Survey sent", "ru": "Опрос отправлен"}, "Type": "bool"},
    "reason": {"Name": {"en": "Why not sent", "ru": "Почему не отправлен"}, "Type": "string"},
}
_DOCUMENT = re.compile(r"^(?:DEAL|DYNAMIC_([0-9]{1,9}))_([0-9]{1,18})$")
"""A deal's or a smart-process item's document: ASCII digits, ids that fit a bigint."""


def robot_fields(code: str, handler: str, document_type: list[str]) -> dict[str, Any]:
    """`bizproc.robot.add` params of the robot for one document type."""
    return {
        "CODE": code,
        "HANDLER": handler,
        "AUTH_USER_ID": 0,
        "USE_SUBSCRIPTION": "Y",
        "NAME": {"en": "Send NPS survey", "ru": "Отправить NPS-опрос"},
        "DESCRIPTION": {
            "en": "b24-nps asks the customer (the contact of the deal or item) for the NPS"
            " survey and answers whether it was sent.",
            "ru": "b24-nps отправляет клиенту NPS-опрос и сообщает, отправлен ли он.",
        },
        "PROPERTIES": PROPERTIES,
        "RETURN_PROPERTIES": RETURN_PROPERTIES,
        "DOCUMENT_TYPE": document_type,
    }


def wanted_robots(handler: str, nps_entity_type_id: int) -> dict[str, dict[str, Any]]:
    """The robots every portal gets, by code: deals and the NPS smart process."""
    nps = ["crm", DYNAMIC_DOCUMENT, f"DYNAMIC_{nps_entity_type_id}"]
    return {
        DEAL_ROBOT: robot_fields(DEAL_ROBOT, handler, DEAL_DOCUMENT),
        NPS_ROBOT: robot_fields(NPS_ROBOT, handler, nps),
    }


@dataclass(frozen=True)
class PortalSmartProcess:
    """A portal's NPS smart process: the `survey.entity_type_id` of the portal's own stored
    configuration (`portal_configs`, edited on its settings page), else of the deployment's
    portal YAML (`template`), as the services serving the portal take it. A stored
    configuration that no longer validates is logged and the template's is taken."""

    pool: asyncpg.Pool
    template: PortalConfig

    async def __call__(self, member_id: str) -> int:
        try:
            async with self.pool.acquire() as conn:
                stored = await portal_store.load(conn, member_id)
        except ConfigError as exc:
            log.error("app_portal_config_invalid", portal=member_id, error=str(exc))
            stored = None
        config = self.template if stored is None else stored.config
        return config.survey.entity_type_id


@dataclass(frozen=True)
class Robots:
    """Registers the robots: `handler` is the application's `/app/robot`; `nps_entity_type_of`
    gives a portal's NPS smart process (its `survey.entity_type_id`: `PortalSmartProcess`)."""

    handler: str
    nps_entity_type_of: Callable[[str], Awaitable[int]]

    async def register(self, client: Bitrix24Client, member_id: str) -> list[str]:
        """Add the robots `bizproc.robot.list` does not show; the codes added (one added
        meanwhile by a concurrent install, which the portal refuses as already installed,
        counts as registered). A robot the portal refuses (its NPS smart process missing, say)
        is logged with the portal's reason and leaves the install and the other robot alone;
        so is a refused `bizproc.robot.list` (no `bizproc` scope, a plan without business
        processes): no robot is registered."""
        wanted = wanted_robots(self.handler, await self.nps_entity_type_of(member_id))
        try:
            listed = (await client.call("bizproc.robot.list")).result
        except PermanentBitrix24Error as exc:  # no bizproc scope, or a plan without it
            log.warning(
                "app_robot_refused",
                member_id=member_id,
                robot=None,
                code=exc.code,
                reason=exc.description,
            )
            return []
        have = {str(code) for code in listed} if isinstance(listed, list) else set()
        added = []
        for code in (code for code in wanted if code not in have):
            try:
                await client.call("bizproc.robot.add", wanted[code])
            except PermanentBitrix24Error as exc:
                if exc.code != "ERROR_ACTIVITY_ALREADY_INSTALLED":
                    log.warning(
                        "app_robot_refused",
                        member_id=member_id,
                        robot=code,
                        code=exc.code,
                        reason=exc.description,
                    )
                    continue
            added.append(code)
        if added:
            log.info("app_robots_registered", member_id=member_id, robots=added)
        return added


@dataclass(frozen=True)
class RobotCall:
    """A robot's call as the portal POSTs it (bracket keys). Tokens never show in a repr."""

    member_id: str
    domain: str | None
    application_token: str
    code: str
    event_token: str
    entity_type_id: int
    entity_id: int
    properties: dict[str, str]

    def __repr__(self) -> str:
        return f"RobotCall(member_id={self.member_id!r}, code={self.code!r})"


def _field(form: Mapping[str, str], key: str, expected: str) -> str:
    value = form.get(key, "").strip()
    if not value:
        status = 403 if key.startswith("auth[") else 400
        raise LifecycleError(f"{key} missing", key, expected, status)
    return value


def read_robot_call(form: Mapping[str, str]) -> RobotCall:
    """The call's fields; a missing or unreadable one is a `LifecycleError` naming it."""
    member_id = _field(form, "auth[member_id]", "the portal's member_id")
    application_token = _field(
        form, "auth[application_token]", "the application_token the portal got at install"
    )
    document = _field(form, "document_id[2]", "the robot's document: DEAL_<id> or DYNAMIC_<t>_<id>")
    match = _DOCUMENT.match(document)
    if match is None:
        raise LifecycleError(
            "document not a deal or a smart-process item",
            "document_id[2]",
            "DEAL_<id> or DYNAMIC_<type>_<id>, ids of at most 18 digits",
        )
    dynamic, number = match.groups()
    code = _field(form, "code", "the robot's code")
    if code not in (DEAL_ROBOT, NPS_ROBOT):
        raise LifecycleError(
            "not one of the application's robots", "code", f"{DEAL_ROBOT} or {NPS_ROBOT}"
        )
    properties = {
        key[len("properties[") : -1]: value
        for key, value in form.items()
        if key.startswith("properties[") and key.endswith("]")
    }
    return RobotCall(
        member_id=member_id,
        domain=form.get("auth[domain]") or None,
        application_token=application_token,
        code=code,
        event_token=_field(form, "event_token", "the launch's event_token"),
        entity_type_id=int(dynamic) if dynamic else DEAL_ENTITY_TYPE_ID,
        entity_id=int(number),
        properties=properties,
    )


@dataclass(frozen=True)
class RobotDoor:
    """Takes the robot's calls: verified by the portal's stored `application_token`, queued as
    `robot.called` for dispatch."""

    book: TokenBook
    pool: asyncpg.Pool
    outbox: Outbox

    async def take(self, form: Mapping[str, str]) -> RobotCalled:
        call = read_robot_call(form)
        stored = await self.book.portal(call.member_id)
        if stored is None or stored.status != "installed":
            raise LifecycleError(
                "portal not installed", "auth[member_id]", "a portal the application is on", 403
            )
        if not same_token(stored.application_token, call.application_token):
            raise LifecycleError(
                "application token not accepted",
                "auth[application_token]",
                "the portal's token",
                403,
            )
        event = RobotCalled(
            event_id=derived_id("robot.called", call.member_id, call.event_token),
            correlation_id=f"robot:{derived_id(call.member_id, call.event_token)}",
            portal=PortalRef(member_id=call.member_id, domain=stored.domain),
            code=call.code,
            event_token=call.event_token,
            entity_type_id=call.entity_type_id,
            entity_id=call.entity_id,
            properties=call.properties,
        )
        async with self.outbox.transaction(self.pool) as conn:
            await self.outbox.enqueue(conn, [event])
        log.info(
            "robot_called",
            member_id=call.member_id,
            code=call.code,
            entity_type_id=call.entity_type_id,
            entity_id=call.entity_id,
        )
        return event
