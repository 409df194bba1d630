"""The sandbox portal: all state and behaviour of a Bitrix24 portal, without HTTP."""

import hashlib
import hmac
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from services.sandbox import batch
from services.sandbox.app_methods import APP_METHODS, method_scope
from services.sandbox.application import AppSide, Caller
from services.sandbox.crm import (
    DEAL_ADD,
    DEAL_UPDATE,
    ITEM_ADD,
    ITEM_UPDATE,
    LEAD_UPDATE,
    TASK_UPDATE,
    Crm,
)
from services.sandbox.errors import RestError
from services.sandbox.events import Delivery, event_body
from services.sandbox.faults import FaultInjector, Faults
from services.sandbox.limits import LeakyBucket, Limits, OperatingTime
from services.sandbox.methods import METHODS, Reply, flag, param
from services.sandbox.state import Handler, PortalState
from services.sandbox.timing import Clock, time_block

DEFAULT_DOMAIN = "sandbox.bitrix24.local"
ITEM_EVENTS = (ITEM_ADD, ITEM_UPDATE, DEAL_ADD, DEAL_UPDATE, LEAD_UPDATE, TASK_UPDATE)
"""What a handler is bound to unless it names its events: the NPS items and deals ingest reads,
and the lead and task updates it forwards to dispatch's follow-up."""
CALL_LOG_SIZE = 100_000

QUERY_LIMIT_EXCEEDED = "QUERY_LIMIT_EXCEEDED"
OPERATION_TIME_LIMIT = "OPERATION_TIME_LIMIT"


def seeded_member_id(seed: str) -> str:
    """The ``member_id`` of a portal seeded from ``seed``: derived from it, so a sandbox started
    again with the same seed is the same portal to the pipeline (and its database)."""
    return hashlib.sha256(f"b24-nps sandbox portal seeded from {seed}".encode()).hexdigest()[:32]


@dataclass
class CallRecord:
    """One method call: a request, or a command inside a ``batch`` (``batch`` = its seq)."""

    seq: int
    method: str
    time: float
    status: int = 0
    error: str | None = None
    batch: int | None = None


@dataclass
class Outcome:
    """What a call produced: a reply or an error, with its ``time`` block."""

    time: dict[str, Any]
    reply: Reply | None = None
    error: RestError | None = None
    processing: float = 0.0

    @property
    def status(self) -> int:
        return self.error.status if self.error else 200

    def body(self) -> dict[str, Any]:
        if self.error is not None:
            return {**self.error.body(), "time": self.time}
        assert self.reply is not None
        body: dict[str, Any] = {"result": self.reply.result}
        if self.reply.total is not None:
            body["total"] = self.reply.total
        if self.reply.next is not None:
            body["next"] = self.reply.next
        body["time"] = self.time
        return body


class SandboxPortal:
    """A Bitrix24 portal in memory: data, inbound-webhook credentials, the leaky bucket, the
    operating-time limiter, injected faults, outgoing events and a log of every call."""

    def __init__(
        self,
        *,
        user_id: int = 1,
        secret: str | None = None,
        application_token: str | None = None,
        member_id: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        limits: Limits | None = None,
        clock: Clock = time.time,
        state: PortalState | None = None,
    ) -> None:
        self.user_id = user_id
        self.secret = secret or secrets.token_hex(8)
        self.application_token = application_token or secrets.token_hex(16)
        self.member_id = member_id or secrets.token_hex(16)
        self.domain = domain
        self.limits = limits or Limits()
        self.clock = clock
        self.state = state or PortalState()
        self.crm = Crm(self.state, clock, user_id, self._emit)
        if state is None:
            self.crm.install_defaults()
        else:
            self.crm.install_deals()
        self.faults = FaultInjector(clock)
        self.deliveries: list[Delivery] = []
        self._outbox: list[Delivery] = []
        self._bucket = LeakyBucket()
        self._operating = OperatingTime()
        self._calls: deque[CallRecord] = deque(maxlen=CALL_LOG_SIZE)
        self._seq = 0
        self._requests = 0
        self._errors: Counter[str] = Counter()
        self.app = AppSide(self)
        self._caller = Caller(user_id=self.user_id)

    # --- the REST entry point -----------------------------------------------------------

    def call(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        auth: tuple[str, str] | None = None,
        app_auth: tuple[str | None, str | None] | None = None,
        arrived: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """Handle one request: its arrival (see `arrive`; skipped when ``arrived``), method
        lookup, injected 500s, operating limit, the method or ``batch``. Returns the HTTP status
        and the JSON body, ``time`` block included. ``app_auth`` = (access token,
        ``auth_connector``) makes it a call in the application's context."""

        def run(name: str, start: float, seq: int) -> Outcome:
            if not arrived:
                self._arrive(start, auth, app_auth)
            caller = self._caller_of(app_auth)
            self._admit(name)
            previous, self._caller = self._caller, caller
            try:
                if name == "batch":
                    return self._batch(params, seq)
                return self._execute(name, params)
            finally:
                self._caller = previous

        return self._serve(method, run)

    def arrive(
        self,
        method: str,
        *,
        auth: tuple[str, str] | None = None,
        app_auth: tuple[str | None, str | None] | None = None,
    ) -> tuple[int, dict[str, Any]] | None:
        """Take a request the moment it arrives, as Bitrix24 does before anything runs or
        hangs: authorization (when ``auth`` = (user, secret) or ``app_auth`` = (token,
        connector) is given), outage, and the leaky bucket, which counts the request now.
        Returns the refusal (HTTP status and body, logged like any call), or None:
        `call(..., arrived=True)` then handles the request."""
        try:
            self._arrive(self.clock(), auth, app_auth)
        except RestError as error:
            return self.reject(method, error)
        return None

    def reject(self, method: str, error: RestError) -> tuple[int, dict[str, Any]]:
        """Answer a request refused before it ran, logged like any other call."""

        def run(name: str, start: float, seq: int) -> Outcome:
            raise error

        return self._serve(method, run)

    @property
    def request_number(self) -> int:
        """How many requests the portal has taken (one "hit" each)."""
        return self._requests

    def delay(self, method: str) -> float:
        """Seconds the HTTP layer waits before handling a call (injected latency or hang)."""
        return self.faults.delay(batch.method_name(method))

    # --- limits and inspection ----------------------------------------------------------

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits

    def reset(self) -> None:
        """Forget the call log, limit counters and faults; data stays."""
        self._bucket.reset()
        self._operating.reset()
        self._calls.clear()
        self._requests = 0
        self._errors.clear()
        self.faults.configure(Faults())

    def info(self, base_url: str) -> dict[str, Any]:
        return {
            "webhook_url": f"{base_url.rstrip('/')}/rest/{self.user_id}/{self.secret}/",
            "user_id": self.user_id,
            "application_token": self.application_token,
            "member_id": self.member_id,
            "domain": self.domain,
            "smart_processes": [
                etype.entity_type_id for etype in self.state.entity_types.values() if etype.dynamic
            ],
            "nps_deal_funnels": [survey.category_id for survey in self.state.deal_surveys],
        }

    def calls_report(
        self, *, method: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        calls = [call for call in self._calls if method is None or call.method == method]
        if limit is not None:
            calls = calls[-limit:] if limit > 0 else []
        return {
            "requests": self._requests,
            "limit_errors": {
                QUERY_LIMIT_EXCEEDED: self._errors[QUERY_LIMIT_EXCEEDED],
                OPERATION_TIME_LIMIT: self._errors[OPERATION_TIME_LIMIT],
            },
            "errors": dict(self._errors),
            "calls": [asdict(call) for call in calls],
        }

    # --- outgoing events ----------------------------------------------------------------

    def register_handler(self, url: str, events: Iterable[str] = ITEM_EVENTS) -> list[Handler]:
        """Bind ``url`` to each event (once per event and URL), as an outgoing webhook does."""
        bound = []
        for event in (name.upper() for name in events):
            handler = next(
                (h for h in self.state.handlers if h.event == event and h.url == url), None
            )
            if handler is None:
                handler = Handler(id=self.crm.next_id("handler"), event=event, url=url)
                self.state.handlers.append(handler)
                self.crm.revision += 1
            bound.append(handler)
        return bound

    def take_outbox(self) -> list[Delivery]:
        """Deliveries created since the last call, for the HTTP layer to send."""
        pending, self._outbox = self._outbox, []
        return pending

    def record_delivery(
        self, delivery_id: int, *, http_status: int | None, error: str | None
    ) -> None:
        delivery = self.deliveries[delivery_id - 1]
        delivery.http_status = http_status
        delivery.error = error
        delivery.status = "failed" if error else "delivered"
        delivery.finished = self.clock()

    def queue_delivery(
        self,
        *,
        url: str,
        event: str,
        handler_id: int,
        body: str,
        entity_type_id: int = 0,
        item_id: int = 0,
    ) -> int:
        """Queue one POST of ``body`` to ``url`` for the HTTP layer; returns its delivery id."""
        delivery = Delivery(
            id=len(self.deliveries) + 1,
            handler_id=handler_id,
            url=url,
            event=event,
            entity_type_id=entity_type_id,
            item_id=item_id,
            created=self.clock(),
            body=body,
        )
        self.deliveries.append(delivery)
        self._outbox.append(delivery)
        return delivery.id

    def _emit(self, event: str, entity_type_id: int, item_id: int) -> None:
        now = self.clock()
        for handler in self.state.handlers:
            if handler.event != event:
                continue
            self.queue_delivery(
                url=handler.url,
                event=event,
                handler_id=handler.id,
                entity_type_id=entity_type_id,
                item_id=item_id,
                body=event_body(
                    event=event,
                    handler_id=handler.id,
                    entity_type_id=entity_type_id,
                    item_id=item_id,
                    ts=int(now),
                    domain=self.domain,
                    member_id=self.member_id,
                    application_token=self.application_token,
                ),
            )
        caller = self._caller
        self.app.on_event(
            event, entity_type_id, item_id, actor=caller.user_id, connector=caller.connector
        )

    # --- internals ----------------------------------------------------------------------

    def _serve(
        self, method: str, run: Callable[[str, float, int], Outcome]
    ) -> tuple[int, dict[str, Any]]:
        start = self.clock()
        name = batch.method_name(method)
        record = self._record(name, start)
        self._requests += 1
        try:
            outcome = run(name, start, record.seq)
        except RestError as error:
            outcome = Outcome(time=self._time(name, start, 0.0), error=error)
        self._finish(record, outcome)
        return outcome.status, outcome.body()

    def _arrive(
        self,
        now: float,
        auth: tuple[str, str] | None,
        app_auth: tuple[str | None, str | None] | None = None,
    ) -> None:
        if auth is not None and not self._authorized(*auth):
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if app_auth is not None:
            self.app.authenticate(*app_auth)
        outage = self.faults.outage(now)
        if outage is not None:
            raise outage
        per_second = self.limits.per_second
        if per_second is not None and not self._bucket.try_take(now, per_second, self.limits.burst):
            raise RestError(503, QUERY_LIMIT_EXCEEDED, "Too many requests")

    def _caller_of(self, app_auth: tuple[str | None, str | None] | None) -> Caller:
        if app_auth is None:
            return Caller(user_id=self.user_id)
        return self.app.authenticate(*app_auth)

    def _admit(self, name: str) -> None:
        if name != "batch" and name not in METHODS and name not in APP_METHODS:
            raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        failure = self.faults.failure(name)
        if failure is not None:
            raise failure

    def _authorized(self, user: str, secret: str) -> bool:
        return user == str(self.user_id) and hmac.compare_digest(
            secret.encode(), self.secret.encode()
        )

    def _execute(self, name: str, params: Mapping[str, Any]) -> Outcome:
        """Run one method under the operating-time limit; its cost counts against ``name``."""
        start = self.clock()
        limit = self.limits.operating_limit_s
        window = self.limits.operating_window_s
        if limit is not None and self._operating.stats(name, start, window).operating > limit:
            blocked = RestError(
                429, OPERATION_TIME_LIMIT, "Method is blocked due to operation time limit."
            )
            return Outcome(time=self._time(name, start, 0.0), error=blocked)
        reply: Reply | None = None
        error: RestError | None = None
        try:
            self._check_scope(name)
            if name in APP_METHODS:
                reply = APP_METHODS[name](self.app, self._caller, params)
            else:
                reply = METHODS[name](self.crm, params)
        except RestError as exc:
            error = exc
        cost = self.limits.cost_per_call_s
        if cost:
            self._operating.add(name, start, window, cost)
        return Outcome(
            time=self._time(name, start, cost), reply=reply, error=error, processing=cost
        )

    def _check_scope(self, name: str) -> None:
        """An application token works only for the methods of the scopes it was granted."""
        caller = self._caller
        scope = method_scope(name)
        if caller.kind == "app" and scope is not None and scope not in caller.scope:
            raise RestError(
                401,
                "insufficient_scope",
                "The request requires higher privileges than provided by the access token",
            )

    def _batch(self, params: Mapping[str, Any], seq: int) -> Outcome:
        """Up to 50 commands in order, each under its own method's operating limit; the
        batch itself counts once in the bucket and never against the operating time."""
        start = self.clock()
        halt = flag(param(params, "halt"))
        sections: dict[str, dict[str, Any]] = {
            "result": {},
            "error": {},
            "total": {},
            "next": {},
            "time": {},
        }
        processing = 0.0
        for index, (key, command) in enumerate(batch.commands(param(params, "cmd"))):
            name, command_params = batch.parse_command(command)
            record = self._record(name, self.clock(), parent=seq)
            outcome = self._batch_command(index, name, batch.substitute(command_params, sections))
            self._finish(record, outcome)
            processing += outcome.processing
            if outcome.error is not None:
                sections["error"][key] = outcome.error.body()
            else:
                assert outcome.reply is not None
                sections["result"][key] = outcome.reply.result
                if outcome.reply.total is not None:
                    sections["total"][key] = outcome.reply.total
                if outcome.reply.next is not None:
                    sections["next"][key] = outcome.reply.next
            if outcome.time:
                sections["time"][key] = outcome.time
            if halt and outcome.error is not None:
                break
        result = {
            "result" if name == "result" else f"result_{name}": batch.php_array(section)
            for name, section in sections.items()
        }
        return Outcome(
            time=self._time("batch", start, processing), reply=Reply(result), processing=processing
        )

    def _batch_command(self, index: int, name: str, params: Mapping[str, Any]) -> Outcome:
        if index >= batch.MAX_COMMANDS:
            error = RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        elif name == "batch":
            error = RestError(
                405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
            )
        elif name not in METHODS and name not in APP_METHODS:
            error = RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        else:
            return self._execute(name, params)
        return Outcome(time={}, error=error)

    def _time(self, name: str, start: float, processing: float) -> dict[str, Any]:
        finish = self.clock()
        stats = None
        if self.limits.operating_limit_s is not None:
            stats = self._operating.stats(name, finish, self.limits.operating_window_s)
        return time_block(start, finish, processing, stats)

    def _record(self, name: str, now: float, parent: int | None = None) -> CallRecord:
        self._seq += 1
        record = CallRecord(seq=self._seq, method=name, time=now, batch=parent)
        self._calls.append(record)
        return record

    def _finish(self, record: CallRecord, outcome: Outcome) -> None:
        record.status = outcome.status
        if outcome.error is not None:
            record.error = outcome.error.code
            self._errors[outcome.error.code] += 1
