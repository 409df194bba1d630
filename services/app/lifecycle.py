"""What the portal sends the application about its own life, read and checked (docs/app.md).
Pure: no I/O.

- The **install form**: the portal POSTs it to the application's install URL in a frame (query
  `DOMAIN`, `PROTOCOL`, `LANG`, `APP_SID`; body `AUTH_ID`, `AUTH_EXPIRES`, `REFRESH_ID`,
  `SERVER_ENDPOINT`, `member_id`, `status`, `PLACEMENT`, `APPLICATION_TOKEN`, …).
- The **lifecycle events** `ONAPPINSTALL`, `ONAPPUPDATE` and `ONAPPUNINSTALL`: form-encoded
  with PHP bracket keys (`event`, `data[…]`, `ts`, `auth[member_id]`, `auth[domain]`,
  `auth[application_token]`, `auth[access_token]`, `auth[refresh_token]`, `auth[expires_in]`,
  `auth[client_endpoint]`, …).
  `ONAPPUNINSTALL` carries no tokens: its `application_token`, compared with the one stored at
  install, is its only proof (bitrix24/b24restdocs `api-reference/events/safe-event-handlers.md`).
  `ONAPPUPDATE` (a new version of the application: `data[VERSION]`, `data[PREVIOUS_VERSION]`)
  carries the installing user's tokens and the portal's new `application_token`; the portal
  dropped every binding, widget and robot of the application with it.
- The **event bindings** and **widgets** (`placement.bind`) the application wants on every
  portal, and which are still missing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.bitrix24.oauth import AnswerError, TokenPair, expiry

INGEST_EVENTS = (
    "ONCRMDYNAMICITEMADD",
    "ONCRMDYNAMICITEMUPDATE",
    "ONCRMDEALADD",
    "ONCRMDEALUPDATE",
    "ONCRMDEALMOVETOCATEGORY",
    "ONCRMLEADUPDATE",
    "ONTASKUPDATE",
)
"""The portal events ingest handles (its webhook's `ITEM_EVENTS`, `DEAL_EVENTS` and
`UPDATE_EVENTS`; a unit test keeps the lists equal), bound to ingest's public webhook URL. The
lead and task updates serve only dispatch's follow-up; they are bound on every portal (where the
follow-up is off, ingest answers them as ignored)."""
UNINSTALL_EVENT = "ONAPPUNINSTALL"
INSTALL_EVENT = "ONAPPINSTALL"
UPDATE_EVENT = "ONAPPUPDATE"
LIFECYCLE_EVENTS = (INSTALL_EVENT, UPDATE_EVENT, UNINSTALL_EVENT)
CONTACT_TAB = "CRM_CONTACT_DETAIL_TAB"
"""The application's tab in contact cards: that contact's answers (the reports app's frame)."""
DEAL_TAB = "CRM_DEAL_DETAIL_TAB"
"""The application's tab in deal cards: that deal's surveys and answers."""
TAB_TITLE = "NPS"
MAX_VERSION = 2**31 - 1


class LifecycleError(ValueError):
    """A request the application refuses: `field` names what is wrong, `expected` what would do,
    `status` the HTTP status to answer."""

    def __init__(self, message: str, field: str, expected: str, status: int = 400) -> None:
        self.message = message
        self.field = field
        self.expected = expected
        self.status = status
        super().__init__(f"{message}: {field}: expected {expected}")

    def body(self) -> dict[str, str]:
        return {"error": self.message, "field": self.field, "expected": self.expected}


def _text(values: Mapping[str, str], key: str, expected: str = "a non-empty value") -> str:
    value = values.get(key, "").strip()
    if not value:
        raise LifecycleError(f"{key} missing", key, expected)
    return value


@dataclass(frozen=True)
class InstallForm:
    """The install form's pair and who it claims to be for. Tokens never show in a repr."""

    member_id: str
    domain: str
    access_token: str
    refresh_token: str
    expires_in: float
    application_token: str | None

    def __repr__(self) -> str:
        return f"InstallForm(member_id={self.member_id!r}, domain={self.domain!r})"


def read_install_form(query: Mapping[str, str], body: Mapping[str, str]) -> InstallForm:
    """The install form (the frame's query and body), or a `LifecycleError` naming the field."""
    try:
        expires_in = expiry(body.get("AUTH_EXPIRES"), 0.0, "AUTH_EXPIRES")
    except AnswerError as exc:
        raise LifecycleError("AUTH_EXPIRES not usable", exc.field, exc.expected) from None
    token = body.get("APPLICATION_TOKEN", "").strip()
    return InstallForm(
        member_id=_text(body, "member_id", "the portal's member_id"),
        domain=_text(query, "DOMAIN", "the portal's domain"),
        access_token=_text(body, "AUTH_ID", "the installing user's access token"),
        refresh_token=_text(body, "REFRESH_ID", "the installing user's refresh token"),
        expires_in=expires_in,
        application_token=token or None,
    )


@dataclass(frozen=True)
class LifecycleEvent:
    """`ONAPPINSTALL`, `ONAPPUPDATE` or `ONAPPUNINSTALL` as posted. Tokens never show in a
    repr."""

    event: str
    member_id: str
    domain: str
    application_token: str
    access_token: str | None
    refresh_token: str | None
    expires_in: float | None
    clean: bool
    """`ONAPPUNINSTALL`'s `data[CLEAN]`: the administrator asked to erase the application's data."""
    version: int | None = None
    """`ONAPPINSTALL`'s and `ONAPPUPDATE`'s `data[VERSION]`: the application's version there."""

    def __repr__(self) -> str:
        return f"LifecycleEvent(event={self.event!r}, member_id={self.member_id!r})"


def read_event(values: Mapping[str, str]) -> LifecycleEvent:
    """A lifecycle event from its flat form fields, or a `LifecycleError` naming the field."""
    event = values.get("event", "").strip().upper()
    if event not in LIFECYCLE_EVENTS:
        raise LifecycleError(
            "not a lifecycle event",
            "event",
            f"{', '.join(LIFECYCLE_EVENTS[:-1])} or {UNINSTALL_EVENT}",
        )
    expires_in: float | None = None
    if values.get("auth[expires_in]", "").strip():
        try:
            expires_in = expiry(values["auth[expires_in]"], 0.0, "auth[expires_in]")
        except AnswerError as exc:
            raise LifecycleError("auth[expires_in] not usable", exc.field, exc.expected) from None
    return LifecycleEvent(
        event=event,
        member_id=_text(values, "auth[member_id]", "the portal's member_id"),
        domain=values.get("auth[domain]", "").strip(),
        application_token=_text(values, "auth[application_token]", "the portal's token"),
        access_token=values.get("auth[access_token]", "").strip() or None,
        refresh_token=values.get("auth[refresh_token]", "").strip() or None,
        expires_in=expires_in,
        clean=values.get("data[CLEAN]", "").strip() in ("1", "Y"),
        version=_version(values.get("data[VERSION]", "").strip()),
    )


def _version(raw: str) -> int | None:
    """`data[VERSION]`: None when absent, else a whole number from 1."""
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_VERSION):
        raise LifecycleError(
            "data[VERSION] not usable", "data[VERSION]", "the application's version, a whole number"
        )
    return int(raw)


def same_token(stored: str | None, given: str) -> bool:
    """True when `given` is the stored application_token, compared in constant time; nothing
    stored matches nothing."""
    return stored is not None and hmac.compare_digest(stored.encode(), given.encode())


def pair_for(
    member_id: str,
    access_token: str,
    refresh_token: str,
    expires_in: float,
    *,
    client_endpoint: str,
    scope: str,
    now: float,
) -> TokenPair:
    """The pair an install brought, once the OAuth server named its portal and REST root."""
    return TokenPair(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=now + expires_in,
        member_id=member_id,
        client_endpoint=client_endpoint,
        scope=scope,
    )


@dataclass(frozen=True)
class Binding:
    """An event binding: the event and the URL it is sent to, or no URL for an offline one (the
    portal queues the event; ingest pulls it with `event.offline.get`)."""

    event: str
    handler: str | None

    def params(self) -> dict[str, str]:
        """`event.bind`'s parameters for it."""
        if self.handler is None:
            return {"event": self.event, "event_type": "offline"}
        return {"event": self.event, "handler": self.handler}


def wanted_bindings(
    ingest_webhook_url: str, events_url: str, *, offline: bool = False
) -> list[Binding]:
    """Every binding the application needs on a portal: ingest's events to ingest's public
    webhook URL (or, for offline intake, to the portal's offline queue), `ONAPPUPDATE` and
    `ONAPPUNINSTALL` to the application's own event URL (a portal sends them to bound handlers
    only)."""
    handler = None if offline else ingest_webhook_url
    return [
        *(Binding(event, handler) for event in INGEST_EVENTS),
        Binding(UPDATE_EVENT, events_url),
        Binding(UNINSTALL_EVENT, events_url),
    ]


def missing_bindings(wanted: Sequence[Binding], bound: Iterable[Any]) -> list[Binding]:
    """The wanted bindings `event.get`'s answer (`[{event, handler, …}]`, an offline one
    `{event, connector_id, offline: 1}`) lacks; event names compare ignoring case."""
    present: set[tuple[str, str | None]] = set()
    for row in bound:
        if not isinstance(row, Mapping):
            continue
        event = str(row.get("event", "")).upper()
        if str(row.get("offline", "0")) == "1":
            present.add((event, None))
        elif row.get("handler"):
            present.add((event, str(row["handler"])))
    return [want for want in wanted if (want.event.upper(), want.handler) not in present]


@dataclass(frozen=True)
class Placement:
    """A widget of the application (`placement.bind`): a place of the portal opening
    `handler`, the reports app's frame."""

    placement: str
    handler: str
    title: str = TAB_TITLE

    def params(self) -> dict[str, str]:
        """`placement.bind`'s parameters for it."""
        return {"PLACEMENT": self.placement, "HANDLER": self.handler, "TITLE": self.title}


def wanted_placements(frame_url: str | None) -> list[Placement]:
    """The widgets every portal gets, opening the reports app's frame at `frame_url` (None:
    none: an administrator's first visit of the dashboard binds them)."""
    if frame_url is None:
        return []
    return [Placement(CONTACT_TAB, frame_url), Placement(DEAL_TAB, frame_url)]


def missing_placements(wanted: Sequence[Placement], bound: Iterable[Any]) -> list[Placement]:
    """The wanted widgets `placement.get`'s answer (`[{placement, handler, …}]`) lacks; place
    codes compare ignoring case."""
    present = {
        (str(row.get("placement", "")).upper(), str(row.get("handler", "")))
        for row in bound
        if isinstance(row, Mapping)
    }
    return [want for want in wanted if (want.placement.upper(), want.handler) not in present]
