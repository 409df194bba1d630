"""The Bitrix24 REST client: inbound-webhook calls, batches and paging within the rate budget.

Every HTTP request takes one of the client's in-flight slots, then counts in the portal's
`RateBudget` right before it goes (as the portal counts it when it arrives). Retries (tenacity,
jittered exponential back-off):
- 503 `QUERY_LIMIT_EXCEEDED`: the portal certainly refused the request, so it is always retried,
  after slowing the shared bucket;
- 5xx, network failures and timeouts: retried for read methods only; a write surfaces
  `PortalUnavailable` at once, because it may have happened and the caller must check;
- 429 `OPERATION_TIME_LIMIT`: never retried here; the method is parked until the portal's reset
  and calls to it fail fast with `OperationTimeLimit` until then. Other methods go on.

The webhook URL holds the webhook's secret: it never appears in a log line, an error or a repr.
Only method names are logged.

**Application mode** (`app=`, `app_client`): instead of a webhook, the client calls an installed
portal's `client_endpoint` with the access token of its `PortalSession` (`auth` in the JSON body,
as the docs show). A call answered `expired_token` has the token refreshed once (single-flight,
`tokens.py`) and is sent once more with the new one; `invalid_token` reads the portal's row
again: installed again meanwhile (a new pair), the call is sent once more with it; otherwise (the
portal dropped the token: uninstalled) it is a permanent error, as is a portal without tokens.
The rate budget of an application portal is keyed by its `member_id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from shared.bitrix24.budget import PgRateBudget, RateBudget
from shared.bitrix24.encoding import command_string
from shared.bitrix24.errors import (
    Bitrix24Error,
    OperationTimeLimit,
    PermanentBitrix24Error,
    PortalUnavailable,
    RateLimited,
    classify,
)
from shared.bitrix24.lanes import BULK, Lane, LanePolicy
from shared.bitrix24.metrics import COMMANDS, LIMIT_ERRORS, REQUESTS, outcome
from shared.bitrix24.tokens import Access, PortalSession, TokenBook
from shared.logging import get_logger
from shared.portal_config import PortalConfig
from shared.settings import Settings

BATCH_SIZE = 50
PAGE_SIZE = 50
READ_SUFFIXES = (".get", ".list", ".fields")
READ_METHODS = frozenset({"user.get", "crm.contact.userfield.list"})
_REFERENCE = re.compile(r"\$result\[([^\]]+)\]")

log = get_logger(__name__)
# httpx logs every request with its full URL at INFO: keep it quiet whatever the root level is.
logging.getLogger("httpx").setLevel(logging.WARNING)


def _user_agent() -> str:
    try:
        return f"b24-nps/{version('b24-nps')}"
    except PackageNotFoundError:
        return "b24-nps/dev"


def is_read_method(method: str) -> bool:
    """True for methods that only read (safe to repeat after a 5xx or a timeout)."""
    name = method.lower()
    return name in READ_METHODS or name.endswith(READ_SUFFIXES)


def portal_key(base_url: str) -> str:
    """The portal's host (and port): the key of its shared rate budget. Not a secret."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class Command:
    """One command of a batch: a unique `name`, the method and its params."""

    name: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """A method's answer: the raw `result`, paging (`total`, `next`) and the `time` block."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class BatchResponse:
    """Per-command outcome of a batch. A command is in `results` when it ran and in `errors`
    when it failed; with `halt=True`, commands after the first failure are in neither."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Bitrix24Error] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)
    times: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def ok(self, name: str) -> bool:
        """True when command `name` ran without an error."""
        return name in self.results and name not in self.errors

    def merge(self, other: BatchResponse) -> None:
        self.results.update(other.results)
        self.errors.update(other.errors)
        self.totals.update(other.totals)
        self.nexts.update(other.nexts)
        self.times.update(other.times)


def _section(value: Any) -> dict[str, Any]:
    """A batch section as a dict: PHP sends an empty one as `[]`, and one whose keys are
    0..n-1 as a list."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return {}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = value.strip().removeprefix("-")
        if digits.isascii() and digits.isdigit():
            return int(value)
    return None


def _error_fields(data: Mapping[str, Any]) -> tuple[str, str]:
    """`(code, description)` from `{"error": ..., "error_description": ...}`, or from REST v3's
    `{"error": {"code": ..., "message": ...}}`."""
    error = data.get("error")
    if isinstance(error, Mapping):
        return str(error.get("code") or ""), str(error.get("message") or "")
    return str(error or ""), str(data.get("error_description") or "")


def _reset_at(data: Mapping[str, Any]) -> float | None:
    time_block = data.get("time")
    if not isinstance(time_block, Mapping):
        return None
    value = time_block.get("operating_reset_at")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _json_default(value: Any) -> str:
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} to Bitrix24")


def _check_names(commands: Sequence[Command]) -> None:
    names = [command.name for command in commands]
    if any(not name for name in names):
        raise ValueError("every batch command needs a non-empty name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"batch command names must be unique; repeated: {', '.join(repeated)}")


def _check_references(chunks: Sequence[Sequence[Command]], queries: Mapping[str, str]) -> None:
    """A `$result[name]` reference only works inside one HTTP request (50 commands)."""
    chunk_of = {command.name: index for index, chunk in enumerate(chunks) for command in chunk}
    for command in (command for chunk in chunks for command in chunk):
        for ref in _REFERENCE.findall(unquote(queries[command.name])):
            if ref in chunk_of and chunk_of[ref] != chunk_of[command.name]:
                raise ValueError(
                    f"command {command.name!r} refers to $result[{ref}], which is sent in another "
                    f"request of {BATCH_SIZE}; keep referring commands within one chunk"
                )


class Bitrix24Client:
    """An inbound-webhook client for one portal; see the module docstring.

    `base_url` is the webhook base (`https://portal/rest/<user>/<secret>/`), a secret.
    `transport` replaces the network (tests pass the sandbox's ASGI app). `max_in_flight` bounds
    concurrent HTTP requests; `max_attempts` and `backoff_s`/`backoff_max_s` shape the retries.
    """

    def __init__(
        self,
        base_url: str | None,
        budget: RateBudget,
        transport: httpx.AsyncBaseTransport | None = None,
        read_timeout_s: float = 75.0,
        *,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_in_flight: int = 8,
        app: PortalSession | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if (base_url is None) == (app is None):
            raise ValueError("give either a webhook base_url or an application session (app)")
        self._app = app
        self._base_url = "" if base_url is None else base_url.rstrip("/") + "/"
        self._portal = portal_key(self._base_url) if app is None else app.member_id
        self.budget = budget
        self.read_timeout_s = read_timeout_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(read_timeout_s, connect=10.0),
            headers={"User-Agent": _user_agent(), "Accept": "application/json"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"Bitrix24Client(portal={self._portal!r})"

    async def __aenter__(self) -> Bitrix24Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- single calls -------------------------------------------------------------------------

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, lane: Lane = BULK
    ) -> Response:
        """Call `method` with JSON `params` in the budget's `lane`; raises a `Bitrix24Error`
        subclass on failure."""
        body = dict(params or {})
        retrying = self._retrying(method, is_read_method(method))
        return await retrying(self._send, method, body, lane)

    async def _send(self, method: str, body: Mapping[str, Any], lane: Lane = BULK) -> Response:
        """One attempt: parks, an in-flight slot, budget, HTTP, limit bookkeeping."""
        parked = await self.budget.parked([method])
        if parked:
            until = next(iter(parked.values()))
            raise OperationTimeLimit(
                method,
                "OPERATION_TIME_LIMIT",
                "method parked for the portal's operating-time limit",
                None,
                reset_at=until,
            )
        try:
            async with self._in_flight:
                # An application portal without tokens fails here, before the budget counts it.
                access = None if self._app is None else await self._app.access()
                # Counted only once it holds a slot, right before it goes: the portal counts a
                # request when it receives it, and one counted while queueing behind hung
                # requests would leave the budget's copy drained by the time it went out.
                await self.budget.acquire(lane)
                if self._app is None or access is None:
                    response = await self._post(method, body)
                else:
                    response = await self._post_app(self._app, access, method, body, lane)
        except RateLimited:
            LIMIT_ERRORS.labels(code="QUERY_LIMIT_EXCEEDED").inc()
            await self.budget.penalise()
            raise
        except OperationTimeLimit as exc:
            LIMIT_ERRORS.labels(code="OPERATION_TIME_LIMIT").inc()
            exc.reset_at = await self.budget.operation_limit_hit(method, exc.reset_at)
            raise
        if method.lower() != "batch":  # the portal counts a batch's commands, not the batch
            await self.budget.observe(method, response.time)
        return response

    async def _post_app(
        self, app: PortalSession, access: Access, method: str, body: Mapping[str, Any], lane: Lane
    ) -> Response:
        """One attempt in application mode: with the portal's access token; `expired_token`
        refreshes it (once for every caller) and sends again, counted in the budget again.
        `invalid_token` sends again only when the row holds a newer token (another process
        refreshed): otherwise it is permanent, and the process's copy is dropped."""
        try:
            return await self._post(method, {**body, "auth": access.access_token}, access)
        except PermanentBitrix24Error as exc:
            code = exc.code.lower()
            if code == "expired_token":
                fresh = await app.refresh(access.access_token)
            elif code == "invalid_token":
                app.forget()
                newer = await app.newer(access.access_token)
                if newer is None:
                    # Not replaced by another process: a portal uninstalled meanwhile (its
                    # tokens erased) is `PortalNotInstalled`, whose work stops, not an error of
                    # this call; else the token is refused for good.
                    await app.access()
                    raise
                fresh = newer
            else:
                raise
        await self.budget.acquire(lane)
        return await self._post(method, {**body, "auth": fresh.access_token}, fresh)

    async def _post(
        self, method: str, body: Mapping[str, Any], access: Access | None = None
    ) -> Response:
        content = json.dumps(body, default=_json_default, ensure_ascii=False).encode()
        base_url = self._base_url if access is None else access.client_endpoint
        try:
            reply = await self._http.post(
                f"{base_url}{method}.json",
                content=content,
                headers={"Content-Type": "application/json"},
            )
            response = self._parse(method, reply)
        except httpx.TimeoutException as exc:
            error: Bitrix24Error = PortalUnavailable(
                method, "TIMEOUT", f"no answer in time ({type(exc).__name__})", None
            )
        except httpx.TransportError as exc:
            detail = str(exc).replace(self._base_url, "<webhook>/") if access is None else str(exc)
            error = PortalUnavailable(
                method, "NETWORK_ERROR", f"{type(exc).__name__}: {detail}", None
            )
        except Bitrix24Error as exc:
            error = exc
        else:
            REQUESTS.labels(method=method, outcome="ok").inc()
            return response
        REQUESTS.labels(method=method, outcome=outcome(error)).inc()
        raise error

    @staticmethod
    def _parse(method: str, reply: httpx.Response) -> Response:
        status = reply.status_code
        try:
            data = reply.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            kind = reply.headers.get("content-type", "no content type")
            hint = " (a redirect: has the portal's address changed?)" if 300 <= status < 400 else ""
            description = f"the portal answered HTTP {status} with a non-JSON body ({kind}){hint}"
            if status >= 500 or status == 429:
                raise PortalUnavailable(method, "INVALID_RESPONSE", description, status)
            raise PermanentBitrix24Error(method, "INVALID_RESPONSE", description, status)
        if "error" in data:
            code, description = _error_fields(data)
            raise classify(method, code, description, status, _reset_at(data))
        if status >= 400 or "result" not in data:
            description = f"HTTP {status} without a result or an error code"
            raise classify(method, "", description, status)
        time_block = data.get("time")
        return Response(
            result=data["result"],
            total=_int(data.get("total")),
            next=_int(data.get("next")),
            time=time_block if isinstance(time_block, dict) else {},
        )

    def _retrying(self, method: str, read: bool) -> AsyncRetrying:
        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, RateLimited) or (read and isinstance(exc, PortalUnavailable))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.warning(
                "bitrix24_retry",
                method=method,
                attempt=state.attempt_number,
                code=getattr(exc, "code", None),
                wait_s=round(state.upcoming_sleep, 3),
            )

        return AsyncRetrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_random_exponential(multiplier=self._backoff_s, max=self._backoff_max_s),
            before_sleep=before_sleep,
            reraise=True,
        )

    # --- batches ------------------------------------------------------------------------------

    async def batch(
        self, commands: Sequence[Command], halt: bool = False, *, lane: Lane = BULK
    ) -> BatchResponse:
        """Run any number of commands, 50 per HTTP request, each request within the budget.

        Results and errors are per command (`result_error` entries become `Bitrix24Error`s);
        a request that fails as a whole (after the client's own retries) gives its error to
        each of its commands. Commands of parked methods are not sent: they get an
        `OperationTimeLimit`. Without `halt`, the requests run concurrently; with it, one after
        the other, stopping at the first failed command. `$result[...]` references must stay
        within one request of 50. Each request goes in the budget's `lane`.
        """
        _check_names(commands)
        queries = {
            command.name: command_string(command.method, command.params) for command in commands
        }
        chunks = [commands[i : i + BATCH_SIZE] for i in range(0, len(commands), BATCH_SIZE)]
        _check_references(chunks, queries)
        combined = BatchResponse()
        if halt:
            for chunk in chunks:
                part = await self._batch_chunk(chunk, queries, halt=True, lane=lane)
                combined.merge(part)
                if part.errors:
                    break
        else:
            parts = await asyncio.gather(
                *(self._batch_chunk(chunk, queries, halt=False, lane=lane) for chunk in chunks)
            )
            for part in parts:
                combined.merge(part)
        return combined

    async def _batch_chunk(
        self, chunk: Sequence[Command], queries: Mapping[str, str], *, halt: bool, lane: Lane
    ) -> BatchResponse:
        out = BatchResponse()
        parked = await self.budget.parked(command.method for command in chunk)
        to_send: list[Command] = []
        for command in chunk:
            until = parked.get(command.method.lower())
            if until is None:
                to_send.append(command)
                continue
            out.errors[command.name] = OperationTimeLimit(
                command.method,
                "OPERATION_TIME_LIMIT",
                "method parked for the portal's operating-time limit; command not sent",
                None,
                reset_at=until,
            )
            COMMANDS.labels(method=command.method, outcome="parked").inc()
            if halt:
                break
        if not to_send:
            return out
        body = {"halt": int(halt), "cmd": {c.name: queries[c.name] for c in to_send}}
        retrying = self._retrying("batch", all(is_read_method(c.method) for c in to_send))
        try:
            response: Response = await retrying(self._send, "batch", body, lane)
        except Bitrix24Error as exc:
            for command in to_send:
                out.errors[command.name] = exc
                COMMANDS.labels(method=command.method, outcome=outcome(exc)).inc()
            return out
        await self._read_batch(response.result, to_send, out)
        return out

    async def _read_batch(self, result: Any, sent: Sequence[Command], out: BatchResponse) -> None:
        sections = result if isinstance(result, dict) else {}
        results = _section(sections.get("result"))
        errors = _section(sections.get("result_error"))
        times = _section(sections.get("result_time"))
        totals = _section(sections.get("result_total"))
        nexts = _section(sections.get("result_next"))
        for command in sent:
            name = command.name
            time_block = times.get(name)
            if isinstance(time_block, dict):
                out.times[name] = time_block
                await self.budget.observe(command.method, time_block)
            if name in errors:
                raw = errors[name]
                code, description = _error_fields(raw if isinstance(raw, Mapping) else {})
                reset_at = _reset_at({"time": time_block})
                error = classify(command.method, code, description, None, reset_at)
                if isinstance(error, OperationTimeLimit):
                    LIMIT_ERRORS.labels(code="OPERATION_TIME_LIMIT").inc()
                    error.reset_at = await self.budget.operation_limit_hit(
                        command.method, error.reset_at
                    )
                out.errors[name] = error
                COMMANDS.labels(method=command.method, outcome=outcome(error)).inc()
            elif name in results:
                out.results[name] = results[name]
                COMMANDS.labels(method=command.method, outcome="ok").inc()
            for source, target in ((totals, out.totals), (nexts, out.nexts)):
                number = _int(source.get(name))
                if number is not None:
                    target[name] = number

    # --- paging -------------------------------------------------------------------------------

    async def list_all(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        id_field: str = "id",
        items_key: str | None = "items",
    ) -> AsyncIterator[Any]:
        """Every item of a list method, fast: ordered by `id_field`, `start=-1` (no COUNT) and
        a `>id_field` filter past the last item seen, 50 per page (docs/bitrix24-client.md,
        Bitrix24 facts: paging).

        `items_key` is where the page's items sit in `result` (`items` for `crm.item.list`,
        None for methods whose result is the list itself); `id_field` is `ID` for legacy
        methods. A caller's `order` other than ascending `id_field` is refused.
        """
        base = dict(params or {})
        order = {id_field: "ASC"}
        if base.get("order", order) != order:
            raise ValueError(f"list_all pages by {id_field} ascending; drop the 'order' param")
        select = base.get("select")
        if isinstance(select, list | tuple) and select and not {"*", id_field} & set(select):
            base["select"] = [*select, id_field]
        page_filter = dict(base.get("filter") or {})
        while True:
            page = {**base, "filter": page_filter, "order": order, "start": -1}
            response = await self.call(method, page)
            items = (
                response.result if items_key is None else _section(response.result).get(items_key)
            )
            if not isinstance(items, list):
                raise PermanentBitrix24Error(
                    method, "INVALID_RESPONSE", f"no item list under {items_key!r}", None
                )
            for item in items:
                yield item
            if len(items) < PAGE_SIZE:
                return
            page_filter = {**page_filter, f">{id_field}": items[-1][id_field]}


def client_from_settings(
    settings: Settings, pool: asyncpg.Pool, config: PortalConfig
) -> Bitrix24Client:
    """The client of a service process: the configured portal (or the local sandbox), with the
    budget in PostgreSQL that every process calling this portal shares."""
    base_url = settings.portal_webhook_url()
    portal = config.portal
    budget = PgRateBudget(
        pool,
        portal_key(base_url),
        portal.effective_rate(),
        operating_limit_s=480.0 if portal.plan != "custom" else 420.0,
        lanes=LanePolicy(bulk_min_share=portal.bulk_min_share),
    )
    return Bitrix24Client(base_url, budget)


def app_client(
    pool: asyncpg.Pool,
    book: TokenBook,
    member_id: str,
    config: PortalConfig,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Bitrix24Client:
    """The client of an installed application portal: its tokens from `book`, its budget in
    PostgreSQL keyed by its `member_id` (shared by every process calling it), limited as
    `client_from_settings` limits the webhook's portal."""
    portal = config.portal
    budget = PgRateBudget(
        pool,
        member_id,
        portal.effective_rate(),
        operating_limit_s=480.0 if portal.plan != "custom" else 420.0,
        lanes=LanePolicy(bulk_min_share=portal.bulk_min_share),
    )
    return Bitrix24Client(None, budget, transport, app=book.session(member_id))
