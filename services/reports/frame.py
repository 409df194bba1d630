"""The dashboard inside a Bitrix24 portal (application mode, docs/dashboard.md "Inside the
portal"): the frame entry's checks and what a frame session may read.

The portal opens the application's page (its handler URL) and its widgets in an iframe with a
POST of the opening user's `AUTH_ID`, `REFRESH_ID`, `member_id`, `PLACEMENT`,
`PLACEMENT_OPTIONS` (and `DOMAIN`, `PROTOCOL`, `LANG`, `APP_SID` in the query). A form proves
nothing by itself, so `enter` checks that:

- `member_id` is a portal the application is installed on (`bitrix24_app_portals`, read through
  `shared/bitrix24/tokens.py`);
- `AUTH_ID` is a token of a user **of that portal**: it is shown to `profile` at the portal's
  REST root as stored at install (`client_endpoint`; never the form's `DOMAIN`), which answers
  only for its own users' tokens. `profile` names the user (`ID`) and whether they administer
  the portal (`ADMIN`).

When an administrator opens it, the application's tabs in contact and deal cards
(`CRM_CONTACT_DETAIL_TAB`, `CRM_DEAL_DETAIL_TAB`; `placement.bind` with their token, once:
`placement.get` first) open the same entry; from there (`PLACEMENT_OPTIONS` `{"ID": "<id>"}`)
the session starts on that contact's ratings, or on that deal's surveys and answers.

The user's tokens are used for those calls and kept nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx

from services.reports.dashboard import Sources
from services.reports.frame_session import FrameUser
from shared import portal_store
from shared.bitrix24.errors import Bitrix24Error, TransientBitrix24Error
from shared.bitrix24.tokens import OAuthServer, app_portal
from shared.db import Conn
from shared.dispatch_config import Dispatch
from shared.logging import get_logger
from shared.portal_config import ConfigError, PortalConfig, contact_field_titles

log = get_logger(__name__)

MAX_FIELD = 2000
"""The longest form value the entry reads (tokens and member_ids are far shorter)."""
CONTACT_TAB = "CRM_CONTACT_DETAIL_TAB"
"""The placement of the application's tab in contact cards: that contact's ratings."""
DEAL_TAB = "CRM_DEAL_DETAIL_TAB"
"""The placement of the application's tab in deal cards: that deal's surveys and answers."""
TABS = (CONTACT_TAB, DEAL_TAB)
TAB_TITLE = "NPS"


class FrameRefused(Exception):  # noqa: N818 - a refusal, not a failure of ours
    """The frame entry or a session's request is refused: `status` and a message naming the
    field and what was expected (shown to the user; no secret in it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Entrant:
    """Who the portal says opened the frame, verified."""

    member_id: str
    user_id: int
    admin: bool
    placement: str
    contact: int | None = None
    """The contact whose card's tab was opened (`CONTACT_TAB`); None for the other places."""
    deal: int | None = None
    """The deal whose card's tab was opened (`DEAL_TAB`); None for the other places."""


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        raise FrameRefused(400, f"{name}: missing; expected the portal's application form")
    if len(value) > MAX_FIELD:
        raise FrameRefused(400, f"{name}: longer than {MAX_FIELD} characters")
    return value.strip()


async def installed_endpoint(conn: Conn, member_id: str) -> str:
    """The REST root of portal `member_id`; `FrameRefused` (403) unless the application is
    installed there."""
    portal = await app_portal(conn, member_id)
    if portal is None or portal.status != "installed":
        raise FrameRefused(
            403,
            "member_id: not a portal this application is installed on; install the application"
            " on the portal, then open it there again",
        )
    return portal.client_endpoint


async def enter(
    conn: Conn,
    http: httpx.AsyncClient,
    form: Mapping[str, Any],
    *,
    handler: str,
    oauth: OAuthServer | None,
) -> Entrant:
    """The verified user of the frame form `form`; `FrameRefused` naming what is wrong. The
    user token must be this application's for this portal (`oauth`'s `app.info`: a token of
    another application of the portal is refused) before its `profile` is trusted. An
    administrator's entry also binds the contact and deal cards' tabs to `handler` (this
    entry's URL) when they are not bound yet; a failure there is logged and does not stop the
    entry."""
    member_id = _field(form, "member_id")
    auth_id = _field(form, "AUTH_ID")
    placement = str(form.get("PLACEMENT") or "DEFAULT")[:100]
    placed = _placed_id(placement, form.get("PLACEMENT_OPTIONS"))
    endpoint = await installed_endpoint(conn, member_id)
    await _ours(oauth, auth_id, member_id)
    profile = await _profile(http, endpoint, auth_id, member_id)
    raw_id = profile.get("ID")
    if not (isinstance(raw_id, str | int) and str(raw_id).isdigit()):
        raise FrameRefused(502, "the portal's profile answer has no user ID")
    admin = profile.get("ADMIN") is True
    if admin:
        try:
            bound = await bind_tabs(http, endpoint, auth_id, handler)
            if bound:
                log.info("frame_tabs_bound", member_id=member_id, placements=bound)
        except FrameRefused as exc:
            log.warning("frame_tabs_not_bound", member_id=member_id, reason=exc.message)
    contact = placed if placement == CONTACT_TAB else None
    deal = placed if placement == DEAL_TAB else None
    return Entrant(member_id, int(raw_id), admin, placement, contact, deal)


async def _ours(oauth: OAuthServer | None, auth_id: str, member_id: str) -> None:
    """`FrameRefused` unless the OAuth server says `auth_id` is this application's token of
    portal `member_id`."""
    if oauth is None:
        raise FrameRefused(
            503,
            "BITRIX24_CLIENT_ID and BITRIX24_CLIENT_SECRET not set: the frame cannot verify"
            " the portal's user token (docs/app.md)",
        )
    try:
        owner = await oauth.token_owner(auth_id)
    except TransientBitrix24Error:
        raise FrameRefused(502, "the OAuth server could not answer now; try again") from None
    except Bitrix24Error:
        log.info("frame_token_refused", member_id=member_id, by="oauth")
        raise FrameRefused(403, "AUTH_ID: the OAuth server did not accept this token") from None
    if owner.client_id != oauth.credentials.client_id:
        log.info("frame_token_refused", member_id=member_id, by="app.info")
        raise FrameRefused(403, "AUTH_ID: a token of another application; open this one")
    if owner.member_id != member_id:
        raise FrameRefused(403, "AUTH_ID: a token of another portal than member_id")


def _placed_id(placement: str, options: Any) -> int | None:
    """The contact of a contact card's tab, the deal of a deal card's (`PLACEMENT_OPTIONS`
    `{"ID": "501"}`); None for the other places."""
    if placement not in TABS:
        return None
    try:
        parsed = json.loads(options) if isinstance(options, str) else None
    except ValueError:
        parsed = None
    raw = parsed.get("ID") if isinstance(parsed, dict) else None
    text = str(raw) if isinstance(raw, str | int) else ""
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= 10 and int(text) >= 1):
        card = "contact" if placement == CONTACT_TAB else "deal"
        raise FrameRefused(400, f"PLACEMENT_OPTIONS: expected the {card} card's ID")
    return int(text)


async def bind_tabs(
    http: httpx.AsyncClient, endpoint: str, auth_id: str, handler: str
) -> list[str]:
    """Bind the application's tabs in contact and deal cards to `handler` with an
    administrator's token, those `placement.get` does not list yet; the places bound now."""
    bound = await _call(http, endpoint, "placement.get", auth_id, {})
    listed = {
        (b.get("placement"), b.get("handler"))
        for b in (bound if isinstance(bound, list) else [])
        if isinstance(b, Mapping)
    }
    placed = []
    for tab in TABS:
        if (tab, handler) not in listed:
            fields = {"PLACEMENT": tab, "HANDLER": handler, "TITLE": TAB_TITLE}
            await _call(http, endpoint, "placement.bind", auth_id, fields)
            placed.append(tab)
    return placed


async def _call(
    http: httpx.AsyncClient, endpoint: str, method: str, auth_id: str, params: Mapping[str, Any]
) -> Any:
    """`method` at the portal with the user's token; its result, or `FrameRefused` (502)."""
    try:
        reply = await http.post(
            f"{endpoint.rstrip('/')}/{method}", json={**params, "auth": auth_id}
        )
        data = reply.json()
    except (httpx.HTTPError, ValueError):
        raise FrameRefused(502, f"{method}: the portal did not answer") from None
    if not isinstance(data, Mapping) or "error" in data or reply.status_code != 200:
        code = data.get("error") if isinstance(data, Mapping) else None
        raise FrameRefused(502, f"{method}: the portal refused ({code or reply.status_code})")
    return data.get("result")


async def _profile(
    http: httpx.AsyncClient, endpoint: str, auth_id: str, member_id: str
) -> Mapping[str, Any]:
    """`profile` for `auth_id` at the portal's REST root `endpoint`."""
    try:
        reply = await http.post(f"{endpoint.rstrip('/')}/profile", json={"auth": auth_id})
    except httpx.HTTPError as exc:
        log.warning("frame_portal_unreachable", member_id=member_id, error=type(exc).__name__)
        raise FrameRefused(502, "the portal did not answer; open the application again") from None
    try:
        data = reply.json()
    except ValueError:
        data = None
    result = data.get("result") if isinstance(data, Mapping) else None
    if reply.status_code >= 500 or reply.status_code == 429:
        log.warning("frame_portal_failed", member_id=member_id, status=reply.status_code)
        raise FrameRefused(502, "the portal could not answer now; open the application again")
    if reply.status_code in (401, 403) or (isinstance(data, Mapping) and "error" in data):
        log.info("frame_token_refused", member_id=member_id, status=reply.status_code)
        raise FrameRefused(
            403,
            "AUTH_ID: the portal did not accept this user token; expected the token the"
            " portal gave when it opened the application",
        )
    if reply.status_code != 200 or not isinstance(result, Mapping):
        log.warning("frame_profile_failed", member_id=member_id, status=reply.status_code)
        raise FrameRefused(502, "the portal's profile answer could not be read; try again")
    return result


async def portal_config(
    conn: Conn, member_id: str, template: PortalConfig | None
) -> PortalConfig | None:
    """The portal's stored configuration (`shared/portal_store.py`), else the deployment's
    template; None when neither exists. A stored one that no longer validates is logged and
    the template read instead: the pages still open (the settings page shows what to fix)."""
    try:
        stored = await portal_store.load(conn, member_id)
    except ConfigError as exc:
        log.warning("frame_portal_config_invalid", member_id=member_id, error=str(exc))
        return template
    return stored.config if stored is not None else template


async def portal_sources(
    conn: Conn, base: Sources, user: FrameUser, template: PortalConfig | None
) -> Sources:
    """What a session's pages read: its portal only (pinned), linked to that portal, shown in
    its time zone with its fields' titles, themes and dispatch settings. `FrameRefused` (403)
    when the portal is no longer installed."""
    endpoint = await installed_endpoint(conn, user.member_id)
    config = await portal_config(conn, user.member_id, template)
    parts = urlsplit(endpoint)
    sources = replace(
        base,
        portal_origin=f"{parts.scheme}://{parts.netloc}",
        pinned_portal=user.member_id,
    )
    if config is None:
        return sources
    return replace(
        sources,
        zone=ZoneInfo(config.portal.timezone),
        field_titles=contact_field_titles(config),
        themes=config.theme_words(),
        dispatch=config.dispatch or Dispatch(),
    )


def chosen_portal(user: FrameUser, chosen: str | None) -> None:
    """A session reads its own portal only: `?portal=` naming another is refused (403)."""
    if chosen is not None and chosen != user.member_id:
        log.warning("frame_other_portal_refused", member_id=user.member_id)
        raise FrameRefused(
            403, "portal: this session reads its own portal only; expected no portal parameter"
        )
