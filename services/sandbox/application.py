"""The registered application on one portal: who calls (webhook or application token), its
installation (install page, ``installFinish``, ``ONAPPINSTALL``), update, uninstall
(``ONAPPUNINSTALL``, everything revoked), the events it bound (online: a POST to its handler;
offline: the queue), its frames and widgets, and its robots' launches.

Every portal has one; only a named portal is connected to the OAuth server (``server``) and
can have the application installed. Nothing here does I/O: deliveries are queued on the portal
and sent by the HTTP layer.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode, urlsplit

from services.sandbox.app_state import AppSettings, AppState, EventBinding
from services.sandbox.brackets import encode
from services.sandbox.errors import RestError
from services.sandbox.events import event_data
from services.sandbox.oauth import TokenError, TokenPair
from services.sandbox.robots import (
    Launch,
    Robot,
    RobotError,
    document_of,
    launch_properties,
)

if TYPE_CHECKING:
    from services.sandbox.oauth_server import AppRegistration, OAuthServer
    from services.sandbox.portal import SandboxPortal

SESSIONS_KEPT = 200
UNINSTALL_EVENTS = ("ONAPPUNINSTALL", "ONAPPSUNINSTALL")


@dataclass(frozen=True)
class Caller:
    """Who makes a REST call: the webhook's user, or a user through an application token."""

    user_id: int
    kind: Literal["webhook", "app"] = "webhook"
    scope: tuple[str, ...] = ()
    connector: str = ""


class LifecycleError(Exception):
    """A lifecycle step that cannot happen now: an HTTP status and what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FrameForm:
    """What the portal POSTs into the application's frame: the query string and the body."""

    url: str
    query: dict[str, str]
    body: dict[str, str]
    user_id: int
    placement: str

    @property
    def action(self) -> str:
        joiner = "&" if "?" in self.url else "?"
        return f"{self.url}{joiner}{urlencode(self.query)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "action": self.action,
            "query": self.query,
            "body": self.body,
            "user_id": self.user_id,
            "placement": self.placement,
        }


@dataclass
class Install:
    """The outcome of an install, for the control endpoint."""

    form: FrameForm | None
    finished: bool
    page_status: int | None = None
    page_error: str | None = None
    notes: list[str] = field(default_factory=list)


class AppSide:
    """The application as one portal sees it."""

    def __init__(self, portal: "SandboxPortal") -> None:
        self.portal = portal
        self.server: OAuthServer | None = None
        self.name: str | None = None
        self._sessions: dict[str, int] = {}
        self._install_pending = False
        self._pinged: dict[int, float] = {}
        self._pinged_hit: dict[int, int] = {}

    # --- identity -----------------------------------------------------------------------------

    @property
    def state(self) -> AppState:
        return self.portal.state.app

    @property
    def settings(self) -> AppSettings:
        return self.state.settings

    @property
    def connected(self) -> bool:
        return self.server is not None and self.name is not None

    @property
    def portal_url(self) -> str:
        root = self.server.root if self.server is not None else ""
        return f"{root}/p/{self.name}"

    @property
    def client_endpoint(self) -> str:
        return f"{self.portal_url}/rest/"

    def registration(self) -> "AppRegistration":
        if self.server is None or self.name is None:
            raise LifecycleError(409, "the default portal has no application: use /p/<name>/")
        if self.server.registration is None:
            raise LifecycleError(
                409,
                "no application is registered: start with --app CLIENT_ID:SECRET"
                " or PUT /sandbox/oauth/app",
            )
        return self.server.registration

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.settings.admins

    def holds(self, token: str, kind: str) -> bool:
        book = self.state.tokens
        if kind == "code":
            return token in book.codes
        if kind == "refresh_token":
            return token in book.refresh
        return token in book.access

    def touch(self) -> None:
        """Something to save changed."""
        self.portal.crm.revision += 1

    # --- calls --------------------------------------------------------------------------------

    def authenticate(self, token: str | None, connector: str | None) -> Caller:
        """The caller behind an access token, or the 401/403 the portal answers."""
        if not token or not self.connected:
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        assert self.server is not None
        try:
            grant = self.state.tokens.check(token, self.server.clock())
        except TokenError as exc:
            raise RestError(401, exc.code, exc.description) from None
        if connector and not self.settings.features.get("rest_auth_connector", False):
            raise RestError(
                403,
                "WRONG_LICENSE",
                "This feature is not enabled for the current license: auth_connector",
            )
        registration = self.server.registration
        scope = tuple(registration.scope) if registration is not None else ()
        return Caller(user_id=grant.user_id, kind="app", scope=scope, connector=connector or "")

    def require_app(self, caller: Caller, *, code: str = "WRONG_AUTH_TYPE", note: str = "") -> None:
        """App-only methods refuse other callers: 403 ``WRONG_AUTH_TYPE`` ("Current
        authorization type is denied for this method") or ``ACCESS_DENIED``."""
        if caller.kind == "app":
            return
        if code == "WRONG_AUTH_TYPE":
            text = "Current authorization type is denied for this method"
        else:
            text = "Access denied!"
        raise RestError(403, code, f"{text} {note}".strip())

    def require_admin(self, caller: Caller, note: str = "") -> None:
        if not self.is_admin(caller.user_id):
            raise RestError(403, "ACCESS_DENIED", f"Access denied! {note}".strip())

    # --- tokens and auth blocks -----------------------------------------------------------------

    def issue(self, user_id: int) -> TokenPair:
        server = self._server()
        pair = self.state.tokens.issue(user_id, server.clock(), server.settings, server.new_token)
        self.touch()
        return pair

    def auth_block(self, user_id: int | None, *, refresh: bool = False) -> dict[str, Any]:
        """The ``auth`` of an outgoing event: a user's tokens when a user is behind it (with a
        refresh token for install, robot and queue pings), the portal and the
        ``application_token`` always."""
        server = self._server()
        auth: dict[str, Any] = {}
        if user_id:
            if refresh:
                pair = self.issue(user_id)
                token, expires_in, expires = pair.access_token, pair.expires_in, pair.expires
            else:
                now = server.clock()
                token, expires_in = self.state.tokens.event_token(
                    user_id, now, server.settings, server.new_token
                )
                expires = int(now) + expires_in
            registration = server.registration
            auth = {
                "access_token": token,
                "expires": expires,
                "expires_in": expires_in,
                "scope": registration.scope_text() if registration else "",
            }
        auth.update(
            {
                "domain": self.portal.domain,
                "server_endpoint": server.server_endpoint,
                "status": self.settings.status,
                "client_endpoint": self.client_endpoint,
                "member_id": self.portal.member_id,
            }
        )
        if user_id:
            auth["user_id"] = user_id
            if refresh:
                auth["refresh_token"] = pair.refresh_token
        auth["application_token"] = self.state.application_token
        return auth

    # --- install, update, uninstall --------------------------------------------------------------

    def begin_install(self, user_id: int) -> FrameForm | None:
        """The application is put on the portal by ``user_id`` (an administrator): it gets an
        ``application_token`` (kept on a reinstall) and the form its install page is opened
        with (None for an application without one: its installation completes at once)."""
        registration = self.registration()
        if not self.is_admin(user_id):
            raise LifecycleError(403, f"user {user_id} is not an administrator of this portal")
        state = self.state
        state.added = True
        state.installed_by = user_id
        if state.application_token is None:
            state.application_token = self._server().new_token()
        self._install_pending = True
        self._log("install", user_id=user_id, version=state.version)
        self.touch()
        url = registration.install_url or registration.handler_url
        if url is None:
            return None
        return self._form(url, user_id, "DEFAULT", {}, application=True)

    def finish_install(self, app_sid: str | None = None) -> bool:
        """``BX24.installFinish()``: the application is installed (events flow, widgets show);
        ``ONAPPINSTALL`` goes out once per install. Returns whether it was new."""
        state = self.state
        if not state.added:
            raise LifecycleError(409, "the application is not on this portal: install it first")
        if app_sid is not None and app_sid not in self._sessions:
            raise LifecycleError(403, "APP_SID: not a frame this portal opened")
        user_id = self._sessions.get(app_sid or "", state.installed_by or self.portal.user_id)
        was = state.installed
        state.installed = True
        self._log("finish", user_id=user_id)
        if self._install_pending:
            self._install_pending = False
            self._send_install(user_id)
        self.touch()
        return not was

    def update(self, version: int | None = None) -> None:
        """A new version: a new ``application_token``, ``ONAPPUPDATE`` to its bound handlers,
        then every event binding, widget and robot removed (the installer of each version
        sets them again)."""
        state = self.state
        if not state.installed:
            raise LifecycleError(409, "the application is not installed on this portal")
        previous = state.version
        state.version = version if version is not None else previous + 1
        state.application_token = self._server().new_token()
        data = {
            "VERSION": state.version,
            "PREVIOUS_VERSION": previous,
            "LANGUAGE_ID": self.settings.language,
        }
        auth = self.auth_block(state.installed_by, refresh=True)
        for binding in self._online("ONAPPUPDATE"):
            self._queue(binding.handler, "ONAPPUPDATE", binding.id, data, auth)
        state.bindings.clear()
        state.placements.clear()
        state.robots.clear()
        self._log("update", version=state.version, previous=previous)
        self.touch()

    def uninstall(self, *, clean: bool) -> int:
        """The administrator deletes the application: ``ONAPPUNINSTALL`` (no tokens, ``CLEAN``)
        to its bound handlers, then every token revoked and everything it had removed.
        Returns how many handlers were told."""
        state = self.state
        if not state.added:
            raise LifecycleError(409, "the application is not on this portal")
        data = {"LANGUAGE_ID": self.settings.language, "CLEAN": 1 if clean else 0}
        auth = self.auth_block(None)
        told = [b for b in state.bindings if not b.offline and b.event in UNINSTALL_EVENTS]
        for binding in told:
            self._queue(binding.handler, "ONAPPUNINSTALL", binding.id, data, auth)
        revoked = state.tokens.revoke_all()
        now = self._server().clock()
        for launch in state.launches:
            if launch.state(now) == "waiting":
                launch.status = "cancelled"
        state.bindings.clear()
        state.placements.clear()
        state.robots.clear()
        state.offline.records.clear()
        state.added = False
        state.installed = False
        state.application_token = None
        self._sessions.clear()
        self._install_pending = False
        self._log("uninstall", clean=clean, tokens_revoked=revoked, told=len(told))
        self.touch()
        return len(told)

    # --- frames -------------------------------------------------------------------------------

    def open_frame(
        self, placement: str, user_id: int, options: Mapping[str, Any] | None = None
    ) -> FrameForm:
        """What the portal POSTs when ``user_id`` opens the application's page (``DEFAULT``)
        or one of its widgets: a fresh token pair of that user."""
        registration = self.registration()
        state = self.state
        if not state.added:
            raise LifecycleError(409, "the application is not on this portal")
        if user_id not in self.portal.state.users:
            raise LifecycleError(404, f"user_id: no user {user_id} on this portal")
        if not state.installed and not self.is_admin(user_id):
            raise LifecycleError(
                403, "the application is not installed yet: only administrators open it"
            )
        code = placement.upper()
        if code == "DEFAULT":
            if registration.handler_url is None:
                raise LifecycleError(409, "the application has no handler URL (its page)")
            url = registration.handler_url
        else:
            binding = next(
                (b for b in state.placements if b.placement == code and b.user_id in (0, user_id)),
                None,
            )
            if binding is None:
                raise LifecycleError(404, f"placement: the application has no {code} widget")
            url = binding.handler
        return self._form(url, user_id, code, dict(options or {}), application=code == "DEFAULT")

    def _form(
        self,
        url: str,
        user_id: int,
        placement: str,
        options: dict[str, Any],
        *,
        application: bool,
    ) -> FrameForm:
        server = self._server()
        pair = self.issue(user_id)
        app_sid = server.new_token()
        self._sessions[app_sid] = user_id
        while len(self._sessions) > SESSIONS_KEPT:
            self._sessions.pop(next(iter(self._sessions)))
        protocol = "1" if server.root.startswith("https") else "0"
        query = {
            "DOMAIN": self.portal.domain,
            "PROTOCOL": protocol,
            "LANG": self.settings.language,
            "APP_SID": app_sid,
        }
        body = {
            "AUTH_ID": pair.access_token,
            "AUTH_EXPIRES": str(pair.expires_in),
            "REFRESH_ID": pair.refresh_token,
            "SERVER_ENDPOINT": server.server_endpoint,
            "member_id": self.portal.member_id,
            "status": self.settings.status,
            "PLACEMENT": placement,
            "PLACEMENT_OPTIONS": json.dumps(options, ensure_ascii=False),
            "PROTOCOL": protocol,
            "LANG": self.settings.language,
        }
        if application:
            registration = server.registration
            body["APPLICATION_TOKEN"] = self.state.application_token or ""
            body["APPLICATION_SCOPE"] = registration.scope_text() if registration else ""
        return FrameForm(url=url, query=query, body=body, user_id=user_id, placement=placement)

    # --- events -------------------------------------------------------------------------------

    def on_event(
        self,
        event: str,
        entity_type_id: int,
        item_id: int,
        *,
        actor: int | None,
        connector: str,
    ) -> None:
        """A CRM event happened: to the application's online handlers (a POST each) and
        offline queue, once it is installed. A change made with an ``auth_connector`` is not
        queued for bindings with that same key."""
        state = self.state
        if not state.installed or not self.connected:
            return
        wanted = [b for b in state.bindings if b.event == event]
        if not wanted:
            return
        data = event_data(event, entity_type_id, item_id)
        now = self._server().clock()
        for binding in wanted:
            if binding.offline:
                if connector and binding.connector == connector:
                    continue
                state.offline.push(
                    event, data, user_id=actor or 0, connector=binding.connector, now=now
                )
                self._ping_offline(event, binding, actor)
                continue
            user = binding.user_id or actor
            self._queue(
                binding.handler,
                event,
                binding.id,
                data,
                self.auth_block(user),
                entity_type_id=entity_type_id,
                item_id=item_id,
            )
        self.touch()

    def _ping_offline(self, event: str, queued: EventBinding, actor: int | None) -> None:
        """``ONOFFLINEEVENT`` to its online handlers, at most once per ``minTimeout`` seconds
        each (default 1; 0: once per request)."""
        now = self._server().clock()
        for binding in self._online("ONOFFLINEEVENT"):
            timeout = int(binding.options.get("minTimeout", 1))
            if timeout > 0:
                if now - self._pinged.get(binding.id, -1e18) < timeout:
                    continue
                self._pinged[binding.id] = now
            else:
                hit = self.portal.request_number
                if self._pinged_hit.get(binding.id) == hit:
                    continue
                self._pinged_hit[binding.id] = hit
            data: dict[str, Any] = {"type": "add", "event": event, "handler": queued.handler}
            if "minTimeout" in binding.options:
                data["minTimeout"] = timeout
            auth = self.auth_block(
                binding.user_id or actor or self.state.installed_by, refresh=True
            )
            self._queue(binding.handler, "ONOFFLINEEVENT", binding.id, data, auth)

    def _send_install(self, user_id: int) -> None:
        registration = self.registration()
        data = {
            "VERSION": self.state.version,
            "ACTIVE": "Y",
            "INSTALLED": "Y",
            "LANGUAGE_ID": self.settings.language,
        }
        targets: dict[str, int] = {}
        if registration.callback_url:
            targets[registration.callback_url] = 0
        for binding in self._online("ONAPPINSTALL"):
            targets.setdefault(binding.handler, binding.id)
        for url, handler_id in targets.items():
            auth = self.auth_block(user_id, refresh=True)
            self._queue(url, "ONAPPINSTALL", handler_id, data, auth)

    def _online(self, event: str) -> list[EventBinding]:
        return [b for b in self.state.bindings if b.event == event and not b.offline]

    def _queue(
        self,
        url: str,
        event: str,
        handler_id: int,
        data: Any,
        auth: dict[str, Any],
        *,
        entity_type_id: int = 0,
        item_id: int = 0,
    ) -> int:
        ts = int(self._server().clock())
        body = encode(
            {"event": event, "event_handler_id": handler_id, "data": data, "ts": ts, "auth": auth}
        )
        return self.portal.queue_delivery(
            url=url,
            event=event,
            handler_id=handler_id,
            body=body,
            entity_type_id=entity_type_id,
            item_id=item_id,
        )

    # --- robots -------------------------------------------------------------------------------

    def run_robot(
        self,
        code: str,
        *,
        entity_type_id: int,
        entity_id: int,
        properties: Mapping[str, Any],
        user_id: int | None = None,
        timeout_s: float | None = None,
    ) -> Launch:
        """An automation rule reaches the robot on a CRM document: its call goes to the
        robot's handler (with ``event_token``, ``document_id``, ``properties`` and the tokens
        of ``AUTH_USER_ID``, else of ``user_id``, else of the installer)."""
        state = self.state
        if not state.installed:
            raise LifecycleError(409, "the application is not installed on this portal")
        robot = self.robot(code)
        if robot is None:
            raise LifecycleError(404, f"no robot {code!r} on this portal")
        if self.portal.crm.get(entity_type_id, entity_id) is None:
            raise LifecycleError(404, f"no CRM item {entity_id} of type {entity_type_id}")
        document_id, document_type = document_of(entity_type_id, entity_id)
        if robot.document_type is not None and robot.document_type != document_type:
            raise LifecycleError(
                409, f"robot {code!r} is for {robot.document_type}, not {document_type}"
            )
        try:
            values = launch_properties(robot, properties)
        except RobotError as exc:
            raise LifecycleError(422, exc.message) from None
        server = self._server()
        now = server.clock()
        token = server.new_token()
        workflow_id = f"{token[:14]}.{int(token[14:22], 16) % 100_000_000:08d}"
        launch = Launch(
            id=state.next_id(),
            code=code,
            workflow_id=workflow_id,
            event_token=f"{workflow_id}|A{token[22:27]}_{token[27:32]}|{server.new_token()}",
            document_id=document_id,
            document_type=document_type,
            properties=values,
            user_id=robot.auth_user_id or user_id or state.installed_by or self.portal.user_id,
            use_subscription=robot.use_subscription,
            created=now,
            timeout_at=None if timeout_s is None else now + timeout_s,
            status="waiting" if robot.use_subscription else "done",
        )
        state.launches.append(launch)
        self.send_launch(launch, robot)
        return launch

    def send_launch(self, launch: Launch, robot: Robot | None = None) -> int:
        """POST a launch's call to its robot's handler (again, for a repeat)."""
        robot = robot or self.robot(launch.code)
        if robot is None:
            raise LifecycleError(409, f"robot {launch.code!r} is no longer on this portal")
        now = self._server().clock()
        timeout = 0 if launch.timeout_at is None else max(0, int(launch.timeout_at - now))
        body = encode(
            {
                "workflow_id": launch.workflow_id,
                "code": launch.code,
                "document_id": launch.document_id,
                "document_type": launch.document_type,
                "event_token": launch.event_token,
                "properties": launch.properties,
                "use_subscription": "Y" if launch.use_subscription else "N",
                "timeout_duration": timeout,
                "ts": int(now),
                "auth": self.auth_block(launch.user_id, refresh=True),
            }
        )
        delivery = self.portal.queue_delivery(
            url=robot.handler, event=f"ROBOT:{launch.code}", handler_id=0, body=body
        )
        launch.deliveries.append(delivery)
        self.touch()
        return delivery

    def robot(self, code: str) -> Robot | None:
        return next((r for r in self.state.robots if r.code == code), None)

    def launch(self, launch_id: int) -> Launch | None:
        return next((launch for launch in self.state.launches if launch.id == launch_id), None)

    # --- inspection ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        state = self.state
        registration = self.server.registration if self.server is not None else None
        now = self._server().clock() if self.server is not None else 0.0
        return {
            "portal": self.name,
            "registered": registration is not None,
            "client_id": registration.client_id if registration else None,
            "added": state.added,
            "installed": state.installed,
            "version": state.version,
            "installed_by": state.installed_by,
            "application_token": state.application_token,
            "client_endpoint": self.client_endpoint if self.connected else None,
            "settings": state.settings.model_dump(),
            "bindings": [b.model_dump() for b in state.bindings],
            "placements": [p.model_dump() for p in state.placements],
            "robots": [r.render() for r in state.robots],
            "launches": [self.launch_json(launch, now) for launch in state.launches],
            "offline": [r.model_dump() for r in state.offline.records],
            "tokens": {
                "access": len(state.tokens.access),
                "refresh": len(state.tokens.refresh),
                "codes": len(state.tokens.codes),
            },
            "lifecycle": state.lifecycle,
        }

    @staticmethod
    def launch_json(launch: Launch, now: float) -> dict[str, Any]:
        launch.state(now)
        return launch.model_dump()

    def _log(self, step: str, **details: Any) -> None:
        now = self._server().clock() if self.server is not None else 0.0
        self.state.lifecycle.append({"step": step, "time": now, **details})

    def _server(self) -> "OAuthServer":
        if self.server is None:
            raise LifecycleError(409, "the default portal has no application: use /p/<name>/")
        return self.server


def app_hosts(registration: "AppRegistration | None") -> set[str]:
    return registration.hosts() if registration is not None else set()


def handler_ok(url: str) -> bool:
    """Bitrix24's check of a handler URL: http(s) and a host with a dot (not first)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and host.find(".") > 0
