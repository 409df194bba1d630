"""An application's automation rules (robots) on one portal (pure): registering them as
``bizproc.robot.add`` checks them, and their launches, answered by ``bizproc.event.send``.

The checks follow module bizproc's ``RestService``: the code ``[a-zA-Z0-9._-]``, a handler URL
with a dotted host, over http(s), on the host of the application's own URLs
(``ERROR_HANDLER_URL_MATCH`` otherwise), a name, property keys ``[a-z][a-z0-9_]*`` each with a
name, a known ``DOCUMENT_TYPE``, a ``FILTER`` array.
"""

import re
from collections.abc import Collection, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

ROBOT_FIELDS = (
    "HANDLER",
    "AUTH_USER_ID",
    "USE_SUBSCRIPTION",
    "NAME",
    "DESCRIPTION",
    "PROPERTIES",
    "RETURN_PROPERTIES",
    "DOCUMENT_TYPE",
    "FILTER",
    "USE_PLACEMENT",
    "PLACEMENT_HANDLER",
)
VALIDATION = "ERROR_ACTIVITY_VALIDATION_FAILURE"
DYNAMIC_DOCUMENT = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"
DOCUMENT_TYPES = {
    ("crm", "CCrmDocumentDeal", "DEAL"): 2,
    ("crm", "CCrmDocumentLead", "LEAD"): 1,
    ("crm", "CCrmDocumentContact", "CONTACT"): 3,
    ("crm", "CCrmDocumentCompany", "COMPANY"): 4,
}
_CODE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)
_PROPERTY_KEY = re.compile(r"^[a-z][a-z0-9_]*$", re.IGNORECASE)
_DOCUMENT = re.compile(r"^(DEAL|LEAD|CONTACT|COMPANY|DYNAMIC_(\d+))_(\d+)$")


class RobotError(ValueError):
    """A refused registration or launch: Bitrix24's error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Robot(BaseModel):
    code: str
    handler: str
    auth_user_id: int = 0
    use_subscription: bool = False
    name: Any
    description: Any = None
    properties: dict[str, dict[str, Any]] = Field(default_factory=dict)
    return_properties: dict[str, dict[str, Any]] = Field(default_factory=dict)
    document_type: list[str] | None = None
    filter: Any = None
    use_placement: bool = False
    placement_handler: str | None = None

    def render(self) -> dict[str, Any]:
        return {
            "CODE": self.code,
            "HANDLER": self.handler,
            "AUTH_USER_ID": self.auth_user_id,
            "USE_SUBSCRIPTION": "Y" if self.use_subscription else "N",
            "NAME": self.name,
            "DESCRIPTION": self.description,
            "PROPERTIES": self.properties,
            "RETURN_PROPERTIES": self.return_properties,
            "DOCUMENT_TYPE": self.document_type,
            "FILTER": self.filter,
            "USE_PLACEMENT": "Y" if self.use_placement else "N",
            "PLACEMENT_HANDLER": self.placement_handler,
        }


LaunchStatus = Literal["waiting", "answered", "done", "timed_out", "cancelled"]


class Launch(BaseModel):
    """One run of a robot on a document: its call to the handler and the answer it got."""

    id: int
    code: str
    workflow_id: str
    event_token: str
    document_id: list[str]
    document_type: list[str]
    properties: dict[str, Any]
    user_id: int
    use_subscription: bool
    created: float
    timeout_at: float | None = None
    status: LaunchStatus = "waiting"
    answered: float | None = None
    answered_by: int | None = None
    return_values: dict[str, Any] | None = None
    ignored_values: dict[str, Any] = Field(default_factory=dict)
    log_message: str | None = None
    sends: int = 0
    """``bizproc.event.send`` calls accepted for this launch (1 once answered)."""
    refused_sends: int = 0
    deliveries: list[int] = Field(default_factory=list)

    def state(self, now: float) -> LaunchStatus:
        """The status, a waiting launch turning ``timed_out`` once its time is up."""
        if self.status == "waiting" and self.timeout_at is not None and now >= self.timeout_at:
            self.status = "timed_out"
        return self.status


def parse_robot(
    params: Mapping[str, Any], *, app_hosts: Collection[str], smart_processes: Collection[int]
) -> Robot:
    """A robot from ``bizproc.robot.add`` parameters (names case-insensitive)."""
    fields = _upper(params)
    code = _text(fields.get("CODE"))
    _check_code(code)
    return _robot(code, fields, app_hosts=app_hosts, smart_processes=smart_processes)


def update_robot(
    robot: Robot,
    changes: Any,
    *,
    app_hosts: Collection[str],
    smart_processes: Collection[int],
) -> Robot:
    """``bizproc.robot.update``: the robot with ``FIELDS`` applied, checked again."""
    if not isinstance(changes, Mapping) or not changes:
        raise RobotError(VALIDATION, "No fields to update.")
    fields = {
        key: value
        for key, value in _upper(robot.render()).items()
        if key != "CODE" and value is not None
    }
    fields.update(_upper(changes))
    return _robot(robot.code, fields, app_hosts=app_hosts, smart_processes=smart_processes)


def _robot(
    code: str,
    fields: Mapping[str, Any],
    *,
    app_hosts: Collection[str],
    smart_processes: Collection[int],
) -> Robot:
    handler = _text(fields.get("HANDLER"))
    check_handler(handler, app_hosts)
    if fields.get("NAME") in (None, "", [], {}):
        raise RobotError(VALIDATION, "Empty activity NAME!")
    properties = _properties(fields.get("PROPERTIES"))
    return_properties = _properties(fields.get("RETURN_PROPERTIES"))
    document_type = fields.get("DOCUMENT_TYPE")
    if document_type is not None:
        document_type = _document_type(document_type, smart_processes)
    robot_filter = fields.get("FILTER")
    if robot_filter is not None and not isinstance(robot_filter, Mapping | list):
        raise RobotError(VALIDATION, "Wrong activity FILTER!")
    placement_handler = fields.get("PLACEMENT_HANDLER")
    use_placement = _flag(fields.get("USE_PLACEMENT"))
    if use_placement:
        if not placement_handler:
            raise RobotError(VALIDATION, "Empty PLACEMENT_HANDLER!")
        check_handler(_text(placement_handler), app_hosts)
    return Robot(
        code=code,
        handler=handler,
        auth_user_id=_int(fields.get("AUTH_USER_ID")) or 0,
        use_subscription=_flag(fields.get("USE_SUBSCRIPTION")),
        name=fields["NAME"],
        description=fields.get("DESCRIPTION"),
        properties=properties,
        return_properties=return_properties,
        document_type=document_type,
        filter=robot_filter,
        use_placement=use_placement,
        placement_handler=_text(placement_handler) if placement_handler else None,
    )


def check_code(code: Any) -> str:
    text = _text(code)
    _check_code(text)
    return text


def _check_code(code: str) -> None:
    if not code:
        raise RobotError(VALIDATION, "Empty activity code!")
    if not _CODE.match(code):
        raise RobotError(VALIDATION, "Wrong activity code!")


def check_handler(url: str, app_hosts: Collection[str]) -> None:
    """A robot's handler: a dotted host, http or https, the host of one of the application's
    URLs (``localhost`` there allows any host)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or host.find(".") <= 0:
        raise RobotError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    if parts.scheme not in ("http", "https"):
        raise RobotError("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported event handler protocol")
    if app_hosts and host not in app_hosts and "localhost" not in app_hosts:
        raise RobotError(
            "ERROR_HANDLER_URL_MATCH", "Handler URL host doesn't match application url"
        )


def _properties(raw: Any) -> dict[str, dict[str, Any]]:
    if raw in (None, "", []):
        return {}
    if not isinstance(raw, Mapping):
        raise RobotError(VALIDATION, "Wrong properties array!")
    properties = {}
    for key, spec in raw.items():
        if not _PROPERTY_KEY.match(str(key)):
            raise RobotError(VALIDATION, f"Wrong property key ({key})!")
        described = _upper(spec) if isinstance(spec, Mapping) else {}
        if described.get("NAME") in (None, "", [], {}):
            raise RobotError(VALIDATION, f"Empty property NAME ({key})!")
        properties[str(key)] = described
    return properties


def _document_type(raw: Any, smart_processes: Collection[int]) -> list[str]:
    parts = list(raw.values()) if isinstance(raw, Mapping) else raw
    if not isinstance(parts, list) or len(parts) != 3:
        raise RobotError(VALIDATION, "Wrong activity DOCUMENT_TYPE!")
    typed = tuple(str(part) for part in parts)
    if typed in DOCUMENT_TYPES:
        return list(typed)
    module, document, entity = typed
    if (module, document) == ("crm", DYNAMIC_DOCUMENT) and entity.startswith("DYNAMIC_"):
        number = entity.removeprefix("DYNAMIC_")
        if number.isdigit() and int(number) in smart_processes:
            return list(typed)
    raise RobotError(VALIDATION, "Wrong activity DOCUMENT_TYPE!")


def document_entity(document_id: list[str]) -> tuple[int, int]:
    """(entityTypeId, id) of a CRM document id such as ``["crm","CCrmDocumentDeal","DEAL_7"]``
    or ``[…, "DYNAMIC_1038_5"]``."""
    match = _DOCUMENT.match(document_id[2]) if len(document_id) == 3 else None
    if match is None:
        raise RobotError("ERROR_DOCUMENT_ID", f"document_id: cannot read {document_id!r}")
    kind, dynamic, number = match.groups()
    if dynamic is not None:
        return int(dynamic), int(number)
    return {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4}[kind], int(number)


def document_of(entity_type_id: int, entity_id: int) -> tuple[list[str], list[str]]:
    """The document id and document type of a CRM entity, as a robot's call names them."""
    for (module, document, name), type_id in DOCUMENT_TYPES.items():
        if type_id == entity_type_id:
            return [module, document, f"{name}_{entity_id}"], [module, document, name]
    dynamic = f"DYNAMIC_{entity_type_id}"
    return (
        ["crm", DYNAMIC_DOCUMENT, f"{dynamic}_{entity_id}"],
        ["crm", DYNAMIC_DOCUMENT, dynamic],
    )


def launch_properties(robot: Robot, given: Mapping[str, Any]) -> dict[str, Any]:
    """The values a launch passes: given ones for the robot's properties, else their
    ``Default``; a ``Required`` one without either is an error naming it."""
    unknown = sorted(set(given) - set(robot.properties))
    if unknown:
        raise RobotError(
            VALIDATION,
            f"properties: {', '.join(unknown)} not among the robot's"
            f" ({', '.join(robot.properties) or 'none'})",
        )
    values: dict[str, Any] = {}
    for key, spec in robot.properties.items():
        if key in given:
            values[key] = given[key]
        elif spec.get("DEFAULT") is not None:
            values[key] = spec["DEFAULT"]
        elif _flag(spec.get("REQUIRED")):
            raise RobotError(VALIDATION, f"properties: {key} is required")
    return values


def accept_values(robot: Robot | None, values: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``RETURN_VALUES`` split into those the robot declares and the rest (ignored)."""
    if not isinstance(values, Mapping):
        return {}, {}
    declared = robot.return_properties if robot is not None else {}
    kept = {str(k): v for k, v in values.items() if str(k) in declared}
    ignored = {str(k): v for k, v in values.items() if str(k) not in declared}
    return kept, ignored


def _upper(raw: Any) -> dict[str, Any]:
    return (
        {str(key).upper(): value for key, value in raw.items()} if isinstance(raw, Mapping) else {}
    )


def _text(raw: Any) -> str:
    return "" if raw is None else str(raw).strip()


def _flag(raw: Any) -> bool:
    return str(raw).strip().upper() in ("Y", "1", "TRUE")


def _int(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None
