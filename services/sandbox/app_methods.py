"""The REST methods of an application's context: ``app.info``, ``profile``, ``feature.get``,
``user.admin``, ``event.*``, ``event.offline.*``, ``placement.*``, ``bizproc.robot.*`` and
``bizproc.event.send``. Each takes the portal's :class:`AppSide`, the :class:`Caller` and the
parameters, as Bitrix24's modules rest and bizproc check them (application context, rights,
arguments)."""

from collections.abc import Callable, Mapping
from typing import Any

from services.sandbox.app_state import EventBinding, PlacementBinding
from services.sandbox.application import AppSide, Caller, app_hosts, handler_ok
from services.sandbox.errors import RestError
from services.sandbox.methods import Reply, param
from services.sandbox.offline import LIST_FIELDS, OfflineError, parse_filter, parse_order
from services.sandbox.robots import RobotError, accept_values, check_code, parse_robot, update_robot

AppMethod = Callable[[AppSide, Caller, Mapping[str, Any]], Reply]

CRM_EVENTS = (
    *(
        f"ONCRM{entity}{action}"
        for entity in ("DEAL", "LEAD", "CONTACT", "COMPANY", "DYNAMICITEM")
        for action in ("ADD", "UPDATE", "DELETE")
    ),
    "ONCRMDEALMOVETOCATEGORY",
)
EVENTS_BY_SCOPE: dict[str, tuple[str, ...]] = {
    "": (
        "ONAPPINSTALL",
        "ONAPPUNINSTALL",
        "ONAPPUPDATE",
        "ONAPPPAYMENT",
        "ONAPPTEST",
        "ONAPPMETHODCONFIRM",
        "ONOFFLINEEVENT",
    ),
    "crm": CRM_EVENTS,
    "user": ("ONUSERADD",),
    "task": ("ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE"),
}
NO_OFFLINE = ("ONOFFLINEEVENT",)
PLACEMENTS_BY_SCOPE: dict[str, tuple[str, ...]] = {
    "crm": tuple(
        f"CRM_{entity}_{place}"
        for entity in ("DEAL", "LEAD", "CONTACT", "COMPANY")
        for place in ("DETAIL_TAB", "LIST_MENU", "DETAIL_TOOLBAR", "DETAIL_ACTIVITY")
    ),
    "": ("LEFT_MENU",),
}
APP_CONTEXT = "Application context required"


def _param(params: Mapping[str, Any], name: str) -> Any:
    return param(params, name)


def _int(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _argument(message: str, argument: str) -> RestError:
    return RestError(400, "ERROR_ARGUMENT", message, extra={"argument": argument})


def _missing(argument: str) -> RestError:
    return _argument(f"Argument '{argument}' is null or empty", argument)


# --- app.info, profile, feature.get, user.admin ---------------------------------------------


def app_info(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """The portal's ``app.info``: the application, its status and the portal's plan."""
    if caller.kind != "app":
        raise RestError(403, "ACCESS_DENIED", f"Access denied! {APP_CONTEXT}")
    state, settings = app.state, app.settings
    registration = app.registration()
    family = "".join(ch for ch in settings.license if ch.isalpha()) or settings.license
    return Reply(
        {
            "ID": 1,
            "CODE": registration.client_id,
            "VERSION": state.version,
            "STATUS": settings.status,
            "INSTALLED": state.installed,
            "PAYMENT_EXPIRED": "Y" if settings.payment_required else "N",
            "DAYS": None,
            "LANGUAGE_ID": settings.language,
            "LICENSE": f"{settings.language}_{settings.license}",
            "LICENSE_TYPE": settings.license,
            "LICENSE_FAMILY": family,
        }
    )


def profile(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """The calling user: ``{ID, ADMIN, NAME, LAST_NAME, …}`` (no scope needed)."""
    user = app.portal.state.users.get(caller.user_id)
    if user is None:
        raise RestError(403, "ACCESS_DENIED", "Access denied! User authorization required")
    return Reply(
        {
            "ID": str(user["ID"]),
            "ADMIN": app.is_admin(caller.user_id),
            "NAME": user.get("NAME", ""),
            "LAST_NAME": user.get("LAST_NAME", ""),
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "",
            "TIME_ZONE_OFFSET": 10800,
        }
    )


def user_admin(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    return Reply(app.is_admin(caller.user_id))


def feature_get(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """``{value: "Y"|"N"}`` for a feature ``CODE`` (the portal's settings say which are on)."""
    code = _param(params, "CODE")
    if code in (None, ""):
        raise RestError(400, "CODE_EMPTY", "CODE can't be empty")
    return Reply({"value": "Y" if app.settings.features.get(str(code), False) else "N"})


# --- event.bind / unbind / get --------------------------------------------------------------


def _bindable(app: AppSide, caller: Caller, event: str) -> bool:
    scopes = {"", *caller.scope}
    return any(event in EVENTS_BY_SCOPE.get(scope, ()) for scope in scopes)


def _event_args(params: Mapping[str, Any]) -> tuple[str, str, str]:
    event = str(_param(params, "EVENT") or "").upper()
    event_type = str(_param(params, "EVENT_TYPE") or "").lower() or "online"
    handler = str(_param(params, "HANDLER") or "")
    if event == "":
        raise _missing("EVENT")
    if event_type not in ("online", "offline"):
        raise _argument("Value must be one of {online|offline}", "EVENT_TYPE")
    return event, event_type, handler


def event_bind(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Bind an online handler (``HANDLER``) or the offline queue (``EVENT_TYPE=offline``,
    administrators only) to ``EVENT``; ``AUTH_TYPE`` picks whose token a handler gets."""
    app.require_app(caller)
    event, event_type, handler = _event_args(params)
    user = _int(_param(params, "AUTH_TYPE")) or 0
    admin = app.is_admin(caller.user_id)
    if user > 0 and not admin and user != caller.user_id:
        raise RestError(
            403,
            "ACCESS_DENIED",
            "Access denied! Event binding with AUTH_TYPE requires administrator access rights",
        )
    if user <= 0 and not admin:
        user = caller.user_id
    if event_type == "offline":
        if not admin:
            raise RestError(
                403,
                "ACCESS_DENIED",
                "Access denied! Offline events binding requires administrator access rights",
            )
        handler, user = "", 0
    elif handler == "":
        raise _missing("HANDLER")
    elif not handler_ok(handler):
        if not handler.lower().startswith(("http://", "https://")) and "://" in handler:
            raise RestError(400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")
        raise RestError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    if not _bindable(app, caller, event):
        raise RestError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
    if handler == "" and event in NO_OFFLINE:
        raise RestError(400, "ERROR_ARGUMENT", "Offline event cannot be registered for this event.")
    options = _param(params, "OPTIONS")
    kept: dict[str, Any] = {}
    if event == "ONOFFLINEEVENT" and isinstance(options, Mapping) and "minTimeout" in options:
        kept["minTimeout"] = _int(options["minTimeout"]) or 0
    state = app.state
    duplicate = any(
        (b.event, b.handler, b.connector, b.user_id) == (event, handler, caller.connector, user)
        for b in state.bindings
    )
    if duplicate:
        raise RestError(400, "ERROR_CORE", "Unable to set event handler: Handler already binded")
    state.bindings.append(
        EventBinding(
            id=state.next_id(),
            event=event,
            handler=handler,
            user_id=user,
            connector=caller.connector,
            options=kept,
        )
    )
    app.touch()
    return Reply(True)


def event_unbind(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Remove bindings of ``EVENT`` (online: with that ``HANDLER``; ``AUTH_TYPE`` narrows);
    returns ``{count}``."""
    app.require_app(caller)
    event, event_type, handler = _event_args(params)
    admin = app.is_admin(caller.user_id)
    user: int | None = None
    if event_type == "offline":
        if not admin:
            raise RestError(
                403,
                "ACCESS_DENIED",
                "Access denied! Offline events unbinding requires administrator access rights",
            )
        handler = ""
    elif handler == "":
        raise _missing("HANDLER")
    else:
        raw = _param(params, "AUTH_TYPE")
        if raw is not None:
            user = _int(raw) or 0
            if not admin and user != caller.user_id:
                raise RestError(
                    403,
                    "ACCESS_DENIED",
                    "Access denied! Event unbinding with AUTH_TYPE requires administrator"
                    " access rights",
                )
        elif not admin:
            user = caller.user_id

    def goes(binding: EventBinding) -> bool:
        if (binding.event, binding.handler) != (event, handler):
            return False
        if event_type == "offline":
            return binding.connector == caller.connector
        return user is None or binding.user_id == user

    state = app.state
    kept = [b for b in state.bindings if not goes(b)]
    count = len(state.bindings) - len(kept)
    state.bindings = kept
    app.touch()
    return Reply({"count": count})


def event_get(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """The application's bindings (a non-administrator sees its own)."""
    app.require_app(caller)
    admin = app.is_admin(caller.user_id)
    return Reply(
        [
            b.render()
            for b in sorted(app.state.bindings, key=lambda b: b.id)
            if admin or b.user_id == caller.user_id
        ]
    )


# --- event.offline.* -----------------------------------------------------------------------


def _offline_caller(app: AppSide, caller: Caller) -> None:
    app.require_app(caller)
    app.require_admin(caller)


def event_offline_get(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Reserve (``clear=0``) or take (``clear=1``, the default) the first queued records."""
    _offline_caller(app, caller)
    lowered = {str(k).lower(): v for k, v in params.items()}
    clear = True if lowered.get("clear") is None else (_int(lowered["clear"]) or 0) != 0
    raw_process = lowered.get("process_id")
    process_id = None if raw_process is None else str(raw_process).strip()
    if not clear and not app.settings.features.get("rest_offline_extended", False):
        raise RestError(
            403,
            "WRONG_LICENSE",
            "This feature is not enabled for the current license: extended offline events handling",
        )
    raw_limit = lowered.get("limit")
    limit = 50 if raw_limit in (None, "") else _int(raw_limit)
    now = app.server.clock() if app.server is not None else 0.0
    state = app.state
    state.offline.expire(now)
    try:
        conditions = parse_filter(lowered.get("filter"))
        order = parse_order(lowered.get("order"))
        shown, records = state.offline.get(
            conditions=conditions,
            order=order,
            limit=limit if limit is not None else 0,
            clear=clear,
            process_id=process_id,
            connector=caller.connector,
            error=_int(lowered.get("error")) == 1,
            new_process_id=app.server.new_token if app.server is not None else lambda: "",
        )
    except OfflineError as exc:
        raise _argument(exc.message, exc.argument) from None
    app.touch()
    return Reply({"process_id": shown, "events": [record.render() for record in records]})


def event_offline_clear(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Delete a batch's records: all, those with ``id``, or those with ``message_id``
    (``message_id`` is ignored when ``id`` is given)."""
    _offline_caller(app, caller)
    lowered = {str(k).lower(): v for k, v in params.items()}
    if lowered.get("process_id") is None:
        raise _missing("PROCESS_ID")
    process_id = str(lowered["process_id"]).strip()
    ids: list[int] | None = None
    message_ids: list[str] | None = None
    if lowered.get("id") is not None:
        raw = lowered["id"]
        numbers = [_int(value) for value in raw] if isinstance(raw, list) else [None]
        if any(number is None or number <= 0 for number in numbers):
            raise _argument("Value must be array of integers", "id")
        ids = [number for number in numbers if number is not None]
    elif lowered.get("message_id") is not None:
        message_ids = _message_ids(lowered["message_id"])
    app.state.offline.clear(process_id, caller.connector, ids=ids, message_ids=message_ids)
    app.touch()
    return Reply(True)


def event_offline_error(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Mark a batch's records of ``message_id`` erroneous: released, read with ``error=1``."""
    _offline_caller(app, caller)
    lowered = {str(k).lower(): v for k, v in params.items()}
    if lowered.get("process_id") is None:
        raise _missing("PROCESS_ID")
    raw = lowered.get("message_id")
    if not isinstance(raw, list):
        raise _argument("Value must be array of MESSAGE_ID values", "message_id")
    message_ids = [str(value).strip() for value in raw]
    if message_ids:
        app.state.offline.mark_error(
            str(lowered["process_id"]).strip(), caller.connector, message_ids
        )
        app.touch()
    return Reply(True)


def event_offline_list(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Every queued record with its ``PROCESS_ID`` and ``ERROR``, changing nothing; pages of
    50 (``start``)."""
    _offline_caller(app, caller)
    lowered = {str(k).lower(): v for k, v in params.items()}
    try:
        conditions = parse_filter(lowered.get("filter"), LIST_FIELDS)
        order = parse_order(lowered.get("order"), LIST_FIELDS, default="ID")
    except OfflineError as exc:
        raise _argument(exc.message, exc.argument) from None
    start = max(0, _int(lowered.get("start")) or 0)
    records, total, following = app.state.offline.listing(
        conditions=conditions, order=order, connector=caller.connector, start=start
    )
    return Reply([record.render(full=True) for record in records], total, following)


def _message_ids(raw: Any) -> list[str]:
    if not isinstance(raw, list):
        raise _argument("Value must be array of MESSAGE_ID values", "message_id")
    values = [str(value).strip() for value in raw]
    if any(len(value) != 32 for value in values):
        raise _argument("Value must be array of MESSAGE_ID values", "message_id")
    return values


# --- placement.* -----------------------------------------------------------------------------


def _placements(app: AppSide, caller: Caller) -> list[str]:
    codes = [code for scope in ("", *caller.scope) for code in PLACEMENTS_BY_SCOPE.get(scope, ())]
    if "crm" in caller.scope:
        codes += [
            f"CRM_DYNAMIC_{etype.entity_type_id}_DETAIL_TAB"
            for etype in app.portal.state.entity_types.values()
            if etype.dynamic
        ]
    return codes


def _placement_caller(app: AppSide, caller: Caller) -> None:
    app.require_app(caller, note=APP_CONTEXT)
    app.require_admin(caller)


def placement_list(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    app.require_app(caller, note=APP_CONTEXT)
    return Reply(_placements(app, caller))


def placement_bind(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """A widget of the application in ``PLACEMENT`` (e.g. ``CRM_DEAL_DETAIL_TAB``) opening
    ``HANDLER``; returns ``true``."""
    _placement_caller(app, caller)
    fields = {str(k).upper(): v for k, v in params.items()}
    code = str(fields.get("PLACEMENT") or "").upper()
    handler = str(fields.get("HANDLER") or "")
    if code == "":
        raise _missing("PLACEMENT")
    if code == "DEFAULT":
        raise _argument("Wrong value", "PLACEMENT")
    if handler == "":
        raise _missing("HANDLER")
    if not handler_ok(handler):
        raise RestError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    if code not in _placements(app, caller):
        raise RestError(400, "ERROR_PLACEMENT_NOT_FOUND", "Placement not found")
    user = _int(fields.get("USER_ID")) or 0
    state = app.state
    if any((b.placement, b.handler, b.user_id) == (code, handler, user) for b in state.placements):
        raise RestError(
            400, "ERROR_CORE", "Unable to set placement handler: Handler already binded"
        )
    lang_all = fields.get("LANG_ALL")
    options = fields.get("OPTIONS")
    state.placements.append(
        PlacementBinding(
            id=state.next_id(),
            placement=code,
            handler=handler,
            user_id=user,
            title=str(fields.get("TITLE") or ""),
            description=str(fields.get("DESCRIPTION") or ""),
            group_name=str(fields.get("GROUP_NAME") or ""),
            options=dict(options) if isinstance(options, Mapping) else {},
            lang_all={
                str(lang): {str(k).upper(): str(v) for k, v in texts.items()}
                for lang, texts in lang_all.items()
                if isinstance(texts, Mapping)
            }
            if isinstance(lang_all, Mapping)
            else {},
        )
    )
    app.touch()
    return Reply(True)


def placement_unbind(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Remove the application's widgets in ``PLACEMENT`` (``HANDLER``, ``USER_ID`` narrow)."""
    _placement_caller(app, caller)
    fields = {str(k).upper(): v for k, v in params.items()}
    code = fields.get("PLACEMENT")
    if not isinstance(code, str):
        raise _argument("The value of an argument 'PLACEMENT' must be of type string", "PLACEMENT")
    if code.strip() == "":
        raise _missing("PLACEMENT")
    handler = str(fields.get("HANDLER") or "")
    user = _int(fields.get("USER_ID")) if "USER_ID" in fields else None
    state = app.state

    def goes(binding: PlacementBinding) -> bool:
        return (
            binding.placement == code.upper()
            and (not handler or binding.handler == handler)
            and (user is None or binding.user_id == user)
        )

    kept = [b for b in state.placements if not goes(b)]
    count = len(state.placements) - len(kept)
    state.placements = kept
    app.touch()
    return Reply({"count": count})


def placement_get(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    _placement_caller(app, caller)
    return Reply([b.render() for b in sorted(app.state.placements, key=lambda b: b.id)])


# --- bizproc.robot.* and bizproc.event.send --------------------------------------------------


def _robot_caller(app: AppSide, caller: Caller) -> None:
    if caller.kind != "app":
        raise RestError(403, "ACCESS_DENIED", f"Access denied! {APP_CONTEXT}")
    app.require_admin(caller)


def _robot_error(exc: RobotError) -> RestError:
    return RestError(400, exc.code, exc.message)


def _smart_processes(app: AppSide) -> set[int]:
    return {t.entity_type_id for t in app.portal.state.entity_types.values() if t.dynamic}


def bizproc_robot_add(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Register a robot (``CODE`` unique per application; ``HANDLER`` on the application's
    host)."""
    _robot_caller(app, caller)
    registration = app.registration()
    try:
        robot = parse_robot(
            params, app_hosts=app_hosts(registration), smart_processes=_smart_processes(app)
        )
    except RobotError as exc:
        raise _robot_error(exc) from None
    if app.robot(robot.code) is not None:
        raise RestError(
            400, "ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!"
        )
    app.state.robots.append(robot)
    app.touch()
    return Reply(True)


def bizproc_robot_update(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Change a robot's ``FIELDS`` (checked as on ``add``)."""
    _robot_caller(app, caller)
    registration = app.registration()
    try:
        code = check_code(_param(params, "CODE"))
    except RobotError as exc:
        raise _robot_error(exc) from None
    robot = app.robot(code)
    if robot is None:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
    try:
        changed = update_robot(
            robot,
            _param(params, "FIELDS"),
            app_hosts=app_hosts(registration),
            smart_processes=_smart_processes(app),
        )
    except RobotError as exc:
        raise _robot_error(exc) from None
    robots = app.state.robots
    robots[robots.index(robot)] = changed
    app.touch()
    return Reply(True)


def bizproc_robot_list(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """The application's robot codes."""
    _robot_caller(app, caller)
    return Reply([robot.code for robot in app.state.robots])


def bizproc_robot_delete(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    _robot_caller(app, caller)
    try:
        code = check_code(_param(params, "CODE"))
    except RobotError as exc:
        raise _robot_error(exc) from None
    robot = app.robot(code)
    if robot is None:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
    app.state.robots.remove(robot)
    app.touch()
    return Reply(True)


def bizproc_event_send(app: AppSide, caller: Caller, params: Mapping[str, Any]) -> Reply:
    """Answer a waiting robot launch: ``EVENT_TOKEN`` of a launch that still waits (else
    ``ACCESS_DENIED``), ``RETURN_VALUES`` (the robot's ``RETURN_PROPERTIES`` kept, others
    recorded as ignored), ``LOG_MESSAGE``."""
    fields = {str(k).upper(): v for k, v in params.items()}
    token = str(fields.get("EVENT_TOKEN") or "")
    launch = next((x for x in app.state.launches if token and x.event_token == token), None)
    if launch is None:
        raise RestError(403, "ACCESS_DENIED", "Access denied!")
    now = app.server.clock() if app.server is not None else 0.0
    if launch.state(now) != "waiting":
        launch.refused_sends += 1
        app.touch()
        raise RestError(403, "ACCESS_DENIED", "Access denied!")
    kept, ignored = accept_values(app.robot(launch.code), fields.get("RETURN_VALUES"))
    launch.status = "answered"
    launch.answered = now
    launch.answered_by = caller.user_id
    launch.return_values = kept
    launch.ignored_values = ignored
    log = fields.get("LOG_MESSAGE")
    launch.log_message = None if log is None else str(log)
    launch.sends += 1
    app.touch()
    return Reply(True)


APP_METHODS: dict[str, AppMethod] = {
    "app.info": app_info,
    "profile": profile,
    "user.admin": user_admin,
    "feature.get": feature_get,
    "event.bind": event_bind,
    "event.unbind": event_unbind,
    "event.get": event_get,
    "event.offline.get": event_offline_get,
    "event.offline.clear": event_offline_clear,
    "event.offline.error": event_offline_error,
    "event.offline.list": event_offline_list,
    "placement.list": placement_list,
    "placement.bind": placement_bind,
    "placement.unbind": placement_unbind,
    "placement.get": placement_get,
    "bizproc.robot.add": bizproc_robot_add,
    "bizproc.robot.update": bizproc_robot_update,
    "bizproc.robot.list": bizproc_robot_list,
    "bizproc.robot.delete": bizproc_robot_delete,
    "bizproc.event.send": bizproc_event_send,
}

SCOPE_PREFIXES = (
    ("crm.", "crm"),
    ("tasks.", "task"),
    ("user.get", "user"),
    ("bizproc.", "bizproc"),
    ("placement.", "placement"),
)


def method_scope(name: str) -> str | None:
    """The scope an application token needs for a method (None: no scope needed)."""
    return next((scope for prefix, scope in SCOPE_PREFIXES if name.startswith(prefix)), None)
