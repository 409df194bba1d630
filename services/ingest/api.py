"""The ingest HTTP endpoints (docs/ingest.md).

- `POST /webhooks/bitrix24`: Bitrix24's event format; the accepted event is stored and its
  `WebhookReceived` written to the outbox in one transaction before the 200, so a broker outage
  never loses it (the relay publishes it later). Bitrix24 never re-sends a failed event. A lead
  or task update (`ONCRMLEADUPDATE`, `ONTASKUPDATE`) is not stored: its `PortalEntityUpdated`
  is written to the outbox alone, for dispatch's follow-up.
- `POST /webhooks/bitrix24/robot`: a smart-process robot's outgoing webhook with the item's fields.

Only the webhooks are served here, on the port the internet reaches; `/healthz`, `/readyz` and
`/metrics` are on a port of their own (`INGEST_HEALTH_PORT`, served by `shared.service`).

A deployment serves one portal: `portal.member_id` when the YAML pins it, otherwise the portal of
the first accepted event or robot call, which ingest keeps (`ingest_portal`). Authentic requests
from any other portal are refused with 403 and store nothing. In application mode (`portals`,
docs/app.md) every portal the application is installed on is served: a request is checked
against the application_token of the portal it names (`bitrix24_app_portals`), and a portal not
installed (never, uninstalled, revoked) is refused with 403 naming why; nothing is stored.

Bad input is 400/403/413/415 with `{"error", "field", "expected"}`; an infrastructure failure is
a 503 (never a 500), logged without secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ingest import store
from services.ingest.webhook import (
    MAX_BODY_BYTES,
    MEMBER_FIELD,
    ROBOT_MEMBER_FIELD,
    Accepted,
    Ignored,
    Registered,
    RequestError,
    Sender,
    Updated,
    authenticate_app,
    authenticate_event,
    authenticate_robot,
    check_content_length,
    check_content_type,
    foreign_portal,
    member_to_learn,
    parse_form,
    read_event,
    read_robot,
    too_large,
)
from shared.app_portals import AppPortals
from shared.events import utcnow
from shared.http import read_body
from shared.logging import get_logger, redact
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.portals import PortalGoneError, UnknownPortalError
from shared.served_portal import learned_portal
from shared.settings import Settings

EVENT_PATH = "/webhooks/bitrix24"
ROBOT_PATH = "/webhooks/bitrix24/robot"
POOL_TIMEOUT_S = 5.0

WEBHOOKS = Counter(
    "nps_ingest_webhooks_total",
    "Incoming webhook requests by endpoint and outcome",
    ["endpoint", "outcome"],
)
_STATUS_OUTCOMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    415: "unsupported_media_type",
}

log = get_logger(__name__)


def create_app(
    settings: Settings,
    config: PortalConfig,
    pool: asyncpg.Pool,
    outbox: Outbox,
    *,
    clock: Callable[[], datetime] = utcnow,
    portals: AppPortals | None = None,
) -> FastAPI:
    """The ingest ASGI app; tests drive it through `httpx.ASGITransport` without a port.
    `portals`: application mode, each request checked against its own portal's registration
    and read with that portal's configuration (`config` is then unused).

    Refuses to build without an accepted token: every event would be rejected with 401.
    """
    tokens = _accepted_tokens(settings, app_mode=portals is not None)
    app = FastAPI(title="b24-nps ingest", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(LastResort)
    pinned = config.portal.member_id
    learned: list[str] = []
    """The learned portal's member id once read: it never changes (one row, never replaced)."""

    async def served() -> str | None:
        """The portal's member id when known: pinned, or learned from the first event."""
        if pinned is not None:
            return pinned
        if learned:
            return learned[0]
        async with pool.acquire(timeout=POOL_TIMEOUT_S) as conn:
            portal = await learned_portal(conn)
        if portal is None:
            return None
        learned.append(portal.member_id)
        return portal.member_id

    @app.post(EVENT_PATH)
    async def bitrix24_event(request: Request) -> JSONResponse:
        try:
            check_content_length(request.headers.get("content-length"))
            check_content_type(request.headers.get("content-type"))
            form = parse_form(await _read_body(request))
            if portals is not None:
                outcome = read_event(form, await _installed(pool, portals, Sender.of_event(form)))
            else:
                member_id = await served()
                authenticate_event(form, tokens, member_id, learned=pinned is None)
                outcome = read_event(form, config)
                if member_id is None:
                    await _learn(pool, outcome, MEMBER_FIELD)
        except RequestError as exc:
            return _rejected("event", request, exc)
        return await _accept(pool, outbox, "event", outcome)

    @app.post(ROBOT_PATH)
    async def bitrix24_robot(request: Request) -> JSONResponse:
        try:
            check_content_length(request.headers.get("content-length"))
            body = await _read_body(request)
            params = parse_form(request.scope.get("query_string", b""), part="query")
            if body.strip():
                check_content_type(request.headers.get("content-type"))
                params.update(parse_form(body))
            if portals is not None:
                installed = _installed(pool, portals, Sender.of_robot(params))
                outcome = read_robot(params, await installed, clock())
            else:
                member_id = await served()
                authenticate_robot(params, tokens, member_id, learned=pinned is None)
                outcome = read_robot(params, config, clock())
                if member_id is None:
                    await _learn(pool, outcome, ROBOT_MEMBER_FIELD)
        except RequestError as exc:
            return _rejected("robot", request, exc)
        return await _accept(pool, outbox, "robot", outcome)

    return app


def _accepted_tokens(settings: Settings, *, app_mode: bool) -> list[str]:
    """The webhook mode's accepted application tokens; none is an error (every event would be
    refused with 401). Application mode checks each portal's own token instead."""
    tokens = settings.app_tokens()
    if not app_mode and not tokens:
        raise ValueError(
            "BITRIX24_APP_TOKEN is required when BITRIX24_WEBHOOK_URL is set: the"
            " application_token the portal shows for its outgoing webhook (comma-separated"
            " to accept two during a rotation)"
        )
    return tokens


async def _installed(pool: asyncpg.Pool, portals: AppPortals, sender: Sender) -> PortalConfig:
    """Application mode: the sending portal's configuration, once the request is proven to come
    from it (its own application_token) and the application is installed there."""
    member_id = sender.portal()
    async with pool.acquire(timeout=POOL_TIMEOUT_S) as conn:
        row = await portals.book.portal(member_id, conn)
    registered = None if row is None else Registered(row.status, row.application_token)
    authenticate_app(sender, registered)
    try:
        return await portals.config_of(member_id)
    except (PortalGoneError, UnknownPortalError):
        raise RequestError(
            403,
            "the application is not installed on this portal any more",
            sender.member_field,
            "a portal the application is installed on",
        ) from None


async def _read_body(request: Request) -> bytes:
    return await read_body(request, MAX_BODY_BYTES, too_large)


async def _learn(
    pool: asyncpg.Pool, outcome: Accepted | Updated | Ignored, member_field: str
) -> None:
    """Keep the portal of the first accepted request as the deployment's; a request that lost
    the race to another portal's first event is refused like any other portal's."""
    if isinstance(outcome, Ignored):
        return
    portal = member_to_learn(outcome.portal, member_field)
    async with pool.acquire(timeout=POOL_TIMEOUT_S) as conn:
        kept, learned_now = await store.learn_portal(conn, portal)
    if learned_now:
        log.info("portal_learned", portal=kept, domain=portal.domain)
    if kept != portal.member_id:
        raise foreign_portal(member_field, learned=True)


async def _accept(
    pool: asyncpg.Pool, outbox: Outbox, endpoint: str, outcome: Accepted | Updated | Ignored
) -> JSONResponse:
    if isinstance(outcome, Ignored):
        WEBHOOKS.labels(endpoint=endpoint, outcome="ignored").inc()
        log.info(
            "webhook_ignored", endpoint=endpoint, event_name=outcome.event, reason=outcome.reason
        )
        return JSONResponse({"status": "ignored", "reason": outcome.reason})
    if isinstance(outcome, Updated):
        return await _forward(pool, outbox, endpoint, outcome)
    event = outcome.to_event()
    async with pool.acquire(timeout=POOL_TIMEOUT_S) as conn:
        stored = await store.record_received(outbox, conn, event, outcome.payload)
    status = "accepted" if stored else "duplicate"
    WEBHOOKS.labels(endpoint=endpoint, outcome=status).inc()
    log.info(
        f"webhook_{status}",
        endpoint=endpoint,
        event_name=event.event,
        entity_type_id=event.entity_type_id,
        item_id=event.item_id,
        ts=event.ts,
        portal=event.portal.key,
        correlation_id=event.correlation_id,
    )
    body: dict[str, Any] = {"status": status}
    if stored:
        body["event_id"] = str(event.event_id)
    return JSONResponse(body)


async def _forward(
    pool: asyncpg.Pool, outbox: Outbox, endpoint: str, outcome: Updated
) -> JSONResponse:
    """A lead or task update: its `PortalEntityUpdated` in the outbox before the 200."""
    event = outcome.to_event()
    async with pool.acquire(timeout=POOL_TIMEOUT_S) as conn:
        await outbox.enqueue(conn, [event])
    WEBHOOKS.labels(endpoint=endpoint, outcome="forwarded").inc()
    log.info(
        "webhook_forwarded",
        endpoint=endpoint,
        event_name=outcome.event,
        entity_type=outcome.entity_type,
        entity_id=outcome.entity_id,
        portal=outcome.portal.key,
    )
    return JSONResponse({"status": "forwarded", "event_id": str(event.event_id)})


def _rejected(endpoint: str, request: Request, error: RequestError) -> JSONResponse:
    WEBHOOKS.labels(endpoint=endpoint, outcome=_STATUS_OUTCOMES.get(error.status, "rejected")).inc()
    log.warning(
        "webhook_rejected",
        endpoint=endpoint,
        status=error.status,
        error=error.error,
        field=error.field,
        client=request.client.host if request.client else None,
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
    )
    return JSONResponse(error.body(), status_code=error.status)


class LastResort:
    """Turns an unexpected failure (database down, pool exhausted…) into a 503, never a 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            path = scope.get("path", "")
            log.error(
                "request_failed",
                path=path,
                error=type(exc).__name__,
                detail=redact(str(exc))[:500],
            )
            if started:
                raise
            endpoint = {EVENT_PATH: "event", ROBOT_PATH: "robot"}.get(path, "other")
            WEBHOOKS.labels(endpoint=endpoint, outcome="unavailable").inc()
            response = JSONResponse(
                {
                    "error": f"temporarily unavailable ({type(exc).__name__}); nothing was stored",
                    "field": None,
                    "expected": "retry later",
                },
                status_code=503,
            )
            await response(scope, receive, send)
