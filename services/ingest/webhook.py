"""Incoming Bitrix24 requests → what ingest stores and publishes (pure: no I/O).

Bitrix24 posts events as `application/x-www-form-urlencoded` bodies with PHP bracket keys
(`data[FIELDS][ID]=24&auth[application_token]=…`); every value is a string. `parse_form` rebuilds
the nesting, `authenticate` checks the application token in constant time and the portal's
`member_id` against the one the deployment serves (pinned or learned), and `read_event` /
`read_robot` decide whether the request is an NPS item event (`Accepted`), a lead or task update
for dispatch's follow-up (`Updated`), or something to acknowledge and drop (`Ignored`).
Anything malformed is `RequestError` with the HTTP status, the offending field and what was
expected.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from services.ingest.mapping import AnswerError, read_time
from services.ingest.sales import sales_funnels
from shared.dispatch_config import Dispatch
from shared.events import (
    DEAL_ENTITY_TYPE_ID,
    PortalEntityUpdated,
    PortalRef,
    WebhookReceived,
    derived_id,
)
from shared.portal_config import CosmeticsSegment, EquipmentSegment, PortalConfig

MAX_BODY_BYTES = 64 * 1024
MAX_PARAMETERS = 500
MAX_KEY_DEPTH = 6
MAX_INTEGER = 2**63 - 1
"""The largest id or Unix time a PostgreSQL `bigint` holds: larger numbers are refused (400)."""
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
ITEM_EVENTS = ("ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE")
DEAL_EVENTS = ("ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALMOVETOCATEGORY")
"""Deal events carry only `data[FIELDS][ID]`: the hydrator reads the deal and keeps it only when
it is in a deal survey's funnel (an answer) or in a sales funnel of `dispatch.sales` (a sale).
A deal moved to another funnel fires `ONCRMDEALMOVETOCATEGORY`, not an update: it is read like
one."""
UPDATE_EVENTS: dict[str, tuple[Literal["lead", "task"], str]] = {
    "ONCRMLEADUPDATE": ("lead", "FIELDS"),
    "ONTASKUPDATE": ("task", "FIELDS_AFTER"),
}
"""Lead and task updates, forwarded to dispatch's follow-up (which reads the entity at once):
the entity and where its id is (`data[FIELDS][ID]`; a task's `data[FIELDS_AFTER][ID]`)."""
ROBOT_EVENT = "ROBOT"
SWEEP_EVENT = "SWEEP"
TOKEN_FIELD = "auth[application_token]"  # noqa: S105 - a parameter name, not a token
MEMBER_FIELD = "auth[member_id]"
ROBOT_TOKEN_FIELD = "application_token"  # noqa: S105 - a parameter name, not a token
ROBOT_MEMBER_FIELD = "member_id"

_PER_TYPE_EVENT = re.compile(r"^(ONCRMDYNAMICITEM(?:ADD|UPDATE))_(\d+)$")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_KEY_PART = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"^\s*(\d+)\s*$")
_MAX_DIGITS = 100  # longer digit strings are out of range (and `int()` refuses over 4,300)
_KEPT_AUTH = ("domain", "member_id", "client_endpoint", "server_endpoint")
_ROBOT_SECRETS = ("application_token", "auth")


class RequestError(Exception):
    """The request is refused with `status`; `body()` says what is wrong and what was expected."""

    def __init__(self, status: int, error: str, field: str, expected: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.expected = expected

    def body(self) -> dict[str, str]:
        return {"error": self.error, "field": self.field, "expected": self.expected}


@dataclass(frozen=True)
class Accepted:
    """An NPS item event to store and publish as `WebhookReceived`."""

    source: Literal["event", "robot"]
    event: str
    portal: PortalRef
    entity_type_id: int
    item_id: int
    ts: int | None
    fields: dict[str, Any] | None
    payload: dict[str, Any]
    """The request as stored: everything but the tokens."""

    def to_event(self) -> WebhookReceived:
        return WebhookReceived(
            correlation_id=correlation_for(self.portal, self.entity_type_id, self.item_id),
            portal=self.portal,
            source=self.source,
            event=self.event,
            entity_type_id=self.entity_type_id,
            item_id=self.item_id,
            ts=self.ts,
            fields=self.fields,
        )


@dataclass(frozen=True)
class Updated:
    """A lead or task changed in the portal: published as `PortalEntityUpdated` for dispatch's
    follow-up, nothing stored."""

    event: str
    portal: PortalRef
    entity_type: Literal["lead", "task"]
    entity_id: int
    ts: int | None

    def to_event(self) -> PortalEntityUpdated:
        """A new id each time: two changes within one second (one `ts`) are two reads, never a
        lost one (a read too many costs one id in the follow-up's batch)."""
        return PortalEntityUpdated(
            correlation_id=f"portal.updated:{self.portal.key}:{self.entity_type}:{self.entity_id}",
            portal=self.portal,
            event=self.event,
            entity_type=self.entity_type,
            entity_id=self.entity_id,
            ts=self.ts,
        )


@dataclass(frozen=True)
class Ignored:
    """A well-formed, authentic request that is no NPS item event: answered 200 and dropped."""

    event: str
    reason: str


def correlation_for(portal: PortalRef, entity_type_id: int, item_id: int) -> str:
    """One correlation id per survey answer (an item), whichever path brought it in."""
    return str(derived_id("answer", portal.key, entity_type_id, item_id))


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != FORM_CONTENT_TYPE:
        raise RequestError(
            415,
            f"unsupported content type {media or '(none)'!r}",
            "Content-Type",
            FORM_CONTENT_TYPE,
        )


def check_content_length(header: str | None) -> None:
    """Refuse an announced body over `MAX_BODY_BYTES` before reading it."""
    if header is None:
        return
    match = _INTEGER.match(header)
    if match is None:
        raise RequestError(400, "Content-Length is not a number", "Content-Length", "a byte count")
    if len(match.group(1)) > _MAX_DIGITS or int(match.group(1)) > MAX_BODY_BYTES:
        raise too_large()


def too_large() -> RequestError:
    return RequestError(
        413, "request body too large", "body", f"at most {MAX_BODY_BYTES} bytes (form-urlencoded)"
    )


def parse_form(raw: bytes | str, part: str = "body") -> dict[str, Any]:
    """Decode a form body or query string into nested dicts (PHP bracket keys; values strings)."""
    expected = f"{FORM_CONTENT_TYPE} data, UTF-8, with valid percent-encoding"
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise RequestError(400, f"{part} is not valid UTF-8", part, expected) from None
    bad = _BAD_PERCENT.search(text)
    if bad is not None:
        snippet = text[bad.start() : bad.start() + 3]
        raise RequestError(400, f"broken percent-encoding {snippet!r} in {part}", part, expected)
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARAMETERS,
        )
    except UnicodeDecodeError:
        raise RequestError(400, f"{part} decodes to invalid UTF-8", part, expected) from None
    except ValueError:
        raise RequestError(
            400, f"{part} has too many parameters", part, f"at most {MAX_PARAMETERS}"
        ) from None
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        # PostgreSQL cannot store NUL in text or jsonb: refused here rather than a 503 there.
        raise RequestError(400, f"{part} contains a NUL character", part, expected)
    return nest(pairs)


def nest(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild `a[b][c]=v` nesting; `a[]` appends; the last of repeated scalar keys wins."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.fullmatch(key)
        if match is None:
            raise RequestError(400, f"malformed parameter name {key!r}", key, "name or name[key]…")
        path = [match.group(1), *_KEY_PART.findall(match.group(2))]
        if len(path) > MAX_KEY_DEPTH:
            raise RequestError(
                400, f"{key!r} is nested too deeply", key, f"at most {MAX_KEY_DEPTH}"
            )
        node = root
        for part in path[:-1]:
            child = node.setdefault(part or str(len(node)), {})
            if not isinstance(child, dict):
                raise RequestError(400, f"{key!r} conflicts with a plain value", key, "one shape")
            node = child
        last = path[-1] or str(len(node))
        if isinstance(node.get(last), dict):
            raise RequestError(400, f"{key!r} conflicts with nested keys", key, "one shape")
        node[last] = value
    return root


def token_matches(presented: str, accepted: Sequence[str]) -> bool:
    """Constant-time comparison against every accepted token (rotation keeps two alive)."""
    given = presented.encode()
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(given, token.encode())
    return matched


def authenticate_event(
    form: Mapping[str, Any],
    accepted_tokens: Sequence[str],
    expected_member: str | None,
    *,
    learned: bool = False,
) -> None:
    """Check `auth[application_token]` (401) and, when the deployment's portal is known (pinned,
    or `learned` from the first event), `auth[member_id]` (403)."""
    auth = _auth(form)
    _authenticate(
        auth.get("application_token"),
        auth.get("member_id"),
        accepted_tokens,
        expected_member,
        (TOKEN_FIELD, MEMBER_FIELD),
        learned=learned,
    )


def authenticate_robot(
    params: Mapping[str, Any],
    accepted_tokens: Sequence[str],
    expected_member: str | None,
    *,
    learned: bool = False,
) -> None:
    """As `authenticate_event`, the token as `application_token` or `auth[application_token]`
    and the portal as `member_id` or `auth[member_id]`."""
    auth = _auth(params)
    _authenticate(
        params.get(ROBOT_TOKEN_FIELD, auth.get("application_token")),
        params.get(ROBOT_MEMBER_FIELD, auth.get("member_id")),
        accepted_tokens,
        expected_member,
        (ROBOT_TOKEN_FIELD, ROBOT_MEMBER_FIELD),
        learned=learned,
    )


def _authenticate(
    token: object,
    member_id: object,
    accepted_tokens: Sequence[str],
    expected_member: str | None,
    names: tuple[str, str],
    *,
    learned: bool,
) -> None:
    token_field, member_field = names
    if not isinstance(token, str) or not token:
        raise RequestError(401, "application token missing", token_field, "the portal's token")
    if not token_matches(token, accepted_tokens):
        raise RequestError(401, "application token not accepted", token_field, "the portal's token")
    if expected_member is not None and member_id != expected_member:
        raise foreign_portal(member_field, learned=learned)


@dataclass(frozen=True)
class Sender:
    """Who a request says it comes from: its application token and its portal's member_id, with
    the names of the fields that carry them."""

    token: object
    member_id: object
    token_field: str
    member_field: str

    @classmethod
    def of_event(cls, form: Mapping[str, Any]) -> Sender:
        auth = _auth(form)
        return cls(auth.get("application_token"), auth.get("member_id"), TOKEN_FIELD, MEMBER_FIELD)

    @classmethod
    def of_robot(cls, params: Mapping[str, Any]) -> Sender:
        auth = _auth(params)
        return cls(
            params.get(ROBOT_TOKEN_FIELD, auth.get("application_token")),
            params.get(ROBOT_MEMBER_FIELD, auth.get("member_id")),
            ROBOT_TOKEN_FIELD,
            ROBOT_MEMBER_FIELD,
        )

    def portal(self) -> str:
        """The member_id the request names (400 without one: in application mode the portal
        decides whose token it must carry)."""
        if not isinstance(self.member_id, str) or not self.member_id:
            raise RequestError(
                400, "portal missing", self.member_field, "the sending portal's member_id"
            )
        return self.member_id


@dataclass(frozen=True)
class Registered:
    """The application's record of a portal (`bitrix24_app_portals`): its status and the
    application_token its events carry (None before `ONAPPINSTALL` brought it)."""

    status: str
    application_token: str | None


def authenticate_app(sender: Sender, registered: Registered | None) -> None:
    """Application mode: the request must carry the application_token of the very portal it
    names, the application being installed there (compared in constant time). 401 for a missing
    or wrong token, 403 naming the reason for a portal not installed."""
    member_field = sender.member_field
    if registered is None:
        raise RequestError(
            403,
            "the application is not installed on this portal",
            member_field,
            "a portal the application is installed on",
        )
    if registered.status != "installed":
        raise RequestError(
            403,
            f"the application is {registered.status} on this portal",
            member_field,
            "a portal the application is installed on",
        )
    if registered.application_token is None:
        raise RequestError(
            403,
            "this portal's application token is not known yet (ONAPPINSTALL not received)",
            member_field,
            "a portal whose install finished",
        )
    token = sender.token
    if not isinstance(token, str) or not token:
        raise RequestError(
            401, "application token missing", sender.token_field, "the portal's token"
        )
    if not token_matches(token, [registered.application_token]):
        raise RequestError(
            401, "application token not accepted", sender.token_field, "the portal's token"
        )


def foreign_portal(member_field: str, *, learned: bool) -> RequestError:
    """The 403 for an authentic request from a portal other than the deployment's."""
    if not learned:
        return RequestError(
            403,
            "event from a portal other than the configured one",
            member_field,
            "portal.member_id",
        )
    return RequestError(
        403,
        "event from a portal other than the one this deployment serves",
        member_field,
        "the member_id learned from the deployment's first event (`nps config check --portal`)",
    )


def member_to_learn(portal: PortalRef, member_field: str) -> PortalRef:
    """The portal of the first accepted request, which the deployment will serve from then on:
    it must name its `member_id` (403 otherwise: it cannot be told from any other portal)."""
    if portal.member_id is None:
        raise RequestError(
            403,
            "event without the portal's member_id",
            member_field,
            "the member_id of the portal this deployment serves",
        )
    return portal


def read_event(form: Mapping[str, Any], config: PortalConfig) -> Accepted | Updated | Ignored:
    """An authenticated Bitrix24 event body → accepted NPS item event, a lead or task update
    for the follow-up, or ignored."""
    raw_name = form.get("event")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise RequestError(400, "event name missing", "event", "a Bitrix24 event name")
    name = raw_name.strip().upper()
    if name in UPDATE_EVENTS:
        return _updated(form, name, config)
    per_type = _PER_TYPE_EVENT.match(name)
    if name in DEAL_EVENTS:
        if not config.deal_surveys and not sales_funnels(config):
            return Ignored(
                name,
                f"{name}: no deal survey (deal_surveys) and no sales funnel (dispatch.sales)"
                " is configured",
            )
        return _accepted(form, name, DEAL_ENTITY_TYPE_ID, "a positive integer deal id")
    if name in ITEM_EVENTS:
        base, type_in_name = name, None
    elif per_type is not None:
        base = per_type.group(1)
        type_in_name = _int(per_type.group(2), "event", "ONCRMDYNAMICITEMADD_<entityTypeId>")
    else:
        return Ignored(name, f"{name} is not an NPS item add/update event")
    fields = _get(_get(form, "data"), "FIELDS")
    entity_field = "data[FIELDS][ENTITY_TYPE_ID]"
    entity_raw = _get(fields, "ENTITY_TYPE_ID")
    if entity_raw is None and type_in_name is not None:
        entity_type_id = type_in_name
    else:
        entity_type_id = _positive_int(entity_raw, entity_field, "the smart process's entityTypeId")
    if type_in_name is not None and type_in_name != entity_type_id:
        raise RequestError(
            400,
            f"entity type {entity_type_id} differs from the one in {name}",
            entity_field,
            str(type_in_name),
        )
    nps_type = config.survey.entity_type_id
    if entity_type_id != nps_type:
        return Ignored(
            name, f"entity type {entity_type_id} is not the NPS smart process {nps_type}"
        )
    return _accepted(form, base, entity_type_id, "a positive integer item id")


def _updated(form: Mapping[str, Any], name: str, config: PortalConfig) -> Updated | Ignored:
    if not (config.dispatch or Dispatch()).followup.enabled:
        return Ignored(name, f"{name}: the follow-up is off (dispatch.followup.enabled)")
    entity_type, group = UPDATE_EVENTS[name]
    fields = _get(_get(form, "data"), group)
    entity_id = _positive_int(
        _get(fields, "ID"), f"data[{group}][ID]", f"a positive integer {entity_type} id"
    )
    auth = _auth(form)
    return Updated(
        event=name,
        portal=_portal(auth.get("member_id"), auth.get("domain")),
        entity_type=entity_type,
        entity_id=entity_id,
        ts=_ts(form),
    )


def _ts(form: Mapping[str, Any]) -> int | None:
    raw = form.get("ts")
    return None if raw in (None, "") else _positive_int(raw, "ts", "Unix time in seconds")


def _accepted(form: Mapping[str, Any], base: str, entity_type_id: int, expected: str) -> Accepted:
    fields = _get(_get(form, "data"), "FIELDS")
    item_id = _positive_int(_get(fields, "ID"), "data[FIELDS][ID]", expected)
    ts = _ts(form)
    auth = _auth(form)
    payload = {key: value for key, value in form.items() if key != "auth"}
    payload["auth"] = {key: auth[key] for key in _KEPT_AUTH if key in auth}
    return Accepted(
        source="event",
        event=base,
        portal=_portal(auth.get("member_id"), auth.get("domain")),
        entity_type_id=entity_type_id,
        item_id=item_id,
        ts=ts,
        fields=None,
        payload=payload,
    )


def read_robot(
    params: Mapping[str, Any], config: PortalConfig, received_at: datetime
) -> Accepted | Ignored:
    """An authenticated robot call (item fields in the query or form) → accepted, or ignored.

    Parameters: `id` (required), `category_id` (required), `entity_type_id` (defaults to the
    NPS smart process; 2 for a deal), `contact_id`, `responsible_id`, `created_time`,
    `updated_time`, and the configured item field codes (score, tested, comment and
    service-request fields; a deal survey's score, comment and sales-deal fields) by name.

    A deal (`entity_type_id=2`) is an NPS deal's answer when `category_id` is a deal survey's
    funnel, or a closed sale when it is a sales funnel of `dispatch.sales` (the robot on the won
    stage: the hydrator reads the deal, its stage is not looked at); of any other funnel it is
    ignored.
    """
    item_id = _positive_int(params.get("id"), "id", "the item's id, a positive integer")
    nps_type = config.survey.entity_type_id
    entity_raw = _first(params, "entity_type_id", "entityTypeId")
    entity_type_id = (
        nps_type
        if entity_raw is None
        else _positive_int(entity_raw, "entity_type_id", "the smart process's entityTypeId")
    )
    funnels = sales_funnels(config)
    deal = entity_type_id == DEAL_ENTITY_TYPE_ID and bool(config.deal_surveys or funnels)
    if entity_type_id != nps_type and not deal:
        return Ignored(
            ROBOT_EVENT, f"entity type {entity_type_id} is not the NPS smart process {nps_type}"
        )
    category_id = _int(
        _first(params, "category_id", "categoryId"),
        "category_id",
        "the item's category (pipeline) id, a whole number",
    )
    if deal and category_id in funnels:
        return _sale_robot(params, item_id, category_id, received_at)
    if deal and config.deal_survey(category_id) is None:
        known = ", ".join(str(f) for f in funnels) or "none"
        surveys = ", ".join(str(d.category_id) for d in config.deal_surveys) or "none"
        return Ignored(
            ROBOT_EVENT,
            f"deal category {category_id} is neither a sales funnel under dispatch.sales"
            f" ({known}) nor a deal survey's funnel ({surveys})",
        )
    survey = config.survey
    fields: dict[str, Any] = {
        "id": item_id,
        "entityTypeId": entity_type_id,
        "categoryId": category_id,
    }
    people = (
        ("contactId", "assignedById")
        if deal
        else (
            survey.fields.contact,
            survey.fields.responsible,
        )
    )
    for name, aliases in zip(people, (("contact_id",), ("responsible_id",)), strict=True):
        value = _first(params, name, *aliases)
        if value is not None:
            fields[name] = _plain(value)
    for name in _deal_field_codes(config) if deal else _item_field_codes(config):
        if name in params:
            fields[name] = _plain(params[name])
    fields["createdTime"] = _robot_time(params, "created_time", received_at)[0]
    fields["updatedTime"], updated = _robot_time(params, "updated_time", received_at)
    return _robot_accepted(params, entity_type_id, item_id, updated, fields)


def _sale_robot(
    params: Mapping[str, Any], deal_id: int, category_id: int, received_at: datetime
) -> Accepted:
    """The won stage's robot naming a sales deal: the hydrator reads the deal (its people, close
    time and product rows), so only its id and funnel travel."""
    _robot_time(params, "created_time", received_at)  # a time that cannot be read is a 400
    updated = _robot_time(params, "updated_time", received_at)[1]
    fields = {"id": deal_id, "entityTypeId": DEAL_ENTITY_TYPE_ID, "categoryId": category_id}
    return _robot_accepted(params, DEAL_ENTITY_TYPE_ID, deal_id, updated, fields)


def _robot_accepted(
    params: Mapping[str, Any],
    entity_type_id: int,
    item_id: int,
    updated: datetime | None,
    fields: dict[str, Any],
) -> Accepted:
    """A robot call to store: its parameters but the secrets, and `fields` for the hydrator."""
    auth = _auth(params)
    payload = {key: value for key, value in params.items() if key not in _ROBOT_SECRETS}
    payload["auth"] = {key: auth[key] for key in _KEPT_AUTH if key in auth}
    return Accepted(
        source="robot",
        event=ROBOT_EVENT,
        portal=_portal(params.get(ROBOT_MEMBER_FIELD, auth.get("member_id")), auth.get("domain")),
        entity_type_id=entity_type_id,
        item_id=item_id,
        ts=None if updated is None else int(updated.timestamp()),
        fields=fields,
        payload=payload,
    )


def _robot_time(
    params: Mapping[str, Any], name: str, received_at: datetime
) -> tuple[str, datetime | None]:
    """The item time sent as `name` (or its camelCase) and its value; receipt time if absent."""
    camel = "".join(part.capitalize() if i else part for i, part in enumerate(name.split("_")))
    raw = _first(params, name, camel)
    if raw in (None, ""):
        return received_at.isoformat(), None
    try:
        return str(raw), read_time({name: raw}, name, None)
    except AnswerError:
        raise RequestError(
            400, f"{name} is not a date and time", name, "ISO 8601, e.g. 2024-07-22T18:00:08Z"
        ) from None


def _item_field_codes(config: PortalConfig) -> list[str]:
    survey = config.survey
    codes = [code for code in (survey.fields.comment, survey.fields.service_request) if code]
    for segment in survey.segments:
        if isinstance(segment, EquipmentSegment):
            codes.append(segment.score_field)
        elif isinstance(segment, CosmeticsSegment):
            for product in segment.products:
                codes.extend((product.tested_field, product.score_field))
    return codes


def _deal_field_codes(config: PortalConfig) -> list[str]:
    return [
        code
        for deal in config.deal_surveys
        for code in (deal.score_field, deal.comment_field, deal.sale_deal_field)
        if code
    ]


def _portal(member_id: object, domain: object) -> PortalRef:
    return PortalRef(
        member_id=member_id if isinstance(member_id, str) and member_id else None,
        domain=domain if isinstance(domain, str) and domain else None,
    )


def _auth(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The `auth[...]` group; empty when absent or sent as a plain value (`auth=x`)."""
    auth = _get(params, "auth")
    return auth if isinstance(auth, Mapping) else {}


def _get(node: object, key: str) -> Any:
    """`node[key]`, matching the key case-insensitively; None when absent or not a mapping."""
    if not isinstance(node, Mapping):
        return None
    if key in node:
        return node[key]
    lowered = key.lower()
    return next((value for name, value in node.items() if name.lower() == lowered), None)


def _first(params: Mapping[str, Any], *names: str) -> Any:
    return next((params[name] for name in names if name in params), None)


def _plain(value: Any) -> Any:
    """A bracketed multiple value (`UF_X[]=a&UF_X[]=b`) as a list; scalars as they came."""
    return list(value.values()) if isinstance(value, Mapping) else value


def _int(raw: object, field: str, expected: str) -> int:
    match = _INTEGER.match(raw) if isinstance(raw, str) else None
    if match is None:
        shown = "missing" if raw is None else f"not a whole number: {raw!r}"
        raise RequestError(400, f"{field} {shown}", field, expected)
    # The digits alone: `\s` also matches separators such as \x1c, which `int()` refuses.
    digits = match.group(1)
    if len(digits) > _MAX_DIGITS or int(digits) > MAX_INTEGER:
        raise RequestError(400, f"{field} is out of range", field, f"{expected} <= {MAX_INTEGER}")
    return int(digits)


def _positive_int(raw: object, field: str, expected: str) -> int:
    value = _int(raw, field, expected)
    if value <= 0:
        raise RequestError(400, f"{field} must be positive, got {value}", field, expected)
    return value
