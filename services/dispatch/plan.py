"""Dispatch's decisions (pure: no I/O; docs/dispatch.md): which requests a closed sale or a
campaign makes, which of them are skipped and why, when a send may go out (the window in the
portal's time zone), and what a request due on the timer needs next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from shared.dispatch_config import WEEKDAYS, Channel, Dispatch, Language, SendWindow
from shared.events import (
    DEAL_ENTITY_TYPE_ID,
    RequestState,
    RobotCalled,
    SaleClosed,
    derived_id,
)
from shared.portal_config import CosmeticsSegment, PortalConfig

Source = Literal["sale", "robot", "campaign"]
SkipReason = Literal["no_contact", "no_deal", "opted_out", "asked_recently"]
FINAL_STATES: frozenset[RequestState] = frozenset(
    {"skipped", "answered", "unanswered", "expired", "failed"}
)
"""A request in one of these states is done: nothing more is sent for it."""
SKIP_TEXTS: dict[str, str] = {
    "no_contact": "the deal has no contact",
    "opted_out": "the contact opted out of surveys",
    "asked_recently": "the contact was asked about this survey within every_days",
    "no_deal": "the portal channel writes the link into a deal, and this request has none"
    " (a campaign for a segment survey: use the email channel for it)",
}


@dataclass(frozen=True)
class Wanted:
    """A survey request a trigger asks for, before it is admitted or skipped."""

    source: Source
    ref: str
    survey: str
    kind: Literal["deal", "segment"]
    category_id: int
    sku: str | None
    contact_id: int | None
    company_id: int | None
    responsible_id: int | None
    sale_deal_id: int | None
    lang: Language
    channel: Channel
    robot_token: str | None = None
    """The robot launch's event_token, for a request the robot asked for."""
    send_after: datetime | None = None
    """The robot's delay: no message before."""

    def request_id(self, portal: str) -> str:
        """Deterministic: the same trigger asks for the same request again, which is one row."""
        return str(
            derived_id(
                "dispatch", portal, self.source, self.ref, self.survey, self.sku, self.contact_id
            )
        )


def _wanted(
    config: PortalConfig,
    dispatch: Dispatch,
    survey: str,
    *,
    source: Source,
    ref: str,
    contact_id: int | None,
    company_id: int | None = None,
    responsible_id: int | None = None,
    sale_deal_id: int | None = None,
) -> Wanted:
    deal = next((d for d in config.deal_surveys if d.name == survey), None)
    if deal is not None:
        kind: Literal["deal", "segment"] = "deal"
        category_id, sku = deal.category_id, None
    else:
        segment = next(s for s in config.survey.segments if s.name == survey)
        kind, category_id = "segment", segment.category_id
        sku = None if isinstance(segment, CosmeticsSegment) else segment.product.sku
    return Wanted(
        source=source,
        ref=ref,
        survey=survey,
        kind=kind,
        category_id=category_id,
        sku=sku,
        contact_id=contact_id,
        company_id=company_id,
        responsible_id=responsible_id,
        sale_deal_id=sale_deal_id,
        lang=dispatch.language_for(survey),
        channel=dispatch.channel_for(survey),
    )


def requests_for_sale(sale: SaleClosed, config: PortalConfig) -> list[Wanted]:
    """What a closed sale asks: its funnel's deal survey, and one equipment survey per product
    row mapped to a segment's SKU (each product once, "one product, one survey")."""
    dispatch = config.dispatch
    trigger = None if dispatch is None else dispatch.sale_trigger(sale.category_id)
    if dispatch is None or trigger is None:
        return []
    source: Source = "robot" if sale.source == "robot" else "sale"

    def want(survey: str) -> Wanted:
        return _wanted(
            config,
            dispatch,
            survey,
            source=source,
            ref=str(sale.deal_id),
            contact_id=sale.contact_id,
            company_id=sale.company_id,
            responsible_id=sale.responsible_id,
            sale_deal_id=sale.deal_id,
        )

    wanted = []
    if trigger.survey is not None:
        wanted.append(want(trigger.survey))
    if trigger.products:
        surveys: list[str] = []
        for row in sale.products:
            sku = dispatch.products.get(str(row.product_id))
            segment = None if sku is None else config.equipment_segment(sku)
            if segment is not None and segment.name is not None and segment.name not in surveys:
                surveys.append(segment.name)
        wanted.extend(want(name) for name in surveys)
    return wanted


ROBOT_PROPERTIES = ("survey", "channel", "delay_minutes")
"""The "Send NPS survey" robot's properties (services/app/robot.py registers them)."""


@dataclass(frozen=True)
class RobotDocument:
    """What dispatch reads of the robot's document (a deal or an NPS item)."""

    contact_id: int | None
    company_id: int | None
    responsible_id: int | None


def document_read(entity_type_id: int, entity_id: int) -> dict[str, object]:
    """`crm.item.get` params of the robot's document."""
    return {"entityTypeId": entity_type_id, "id": entity_id}


def robot_document(result: object) -> RobotDocument | None:
    """The document of a `crm.item.get` result (`{"item": {...}}`); None when there is none."""
    item = result.get("item") if isinstance(result, dict) else None
    if not isinstance(item, dict):
        return None

    def number(name: str) -> int | None:
        value = item.get(name)
        text = str(value).strip() if isinstance(value, int | str) else ""
        return int(text) if text.isdigit() and int(text) > 0 else None

    return RobotDocument(number("contactId"), number("companyId"), number("assignedById"))


MAX_ROBOT_DELAY_MINUTES = 525_600
"""The longest delay a robot may ask for: a year."""


def request_for_robot(
    call: RobotCalled, document: RobotDocument, config: PortalConfig, now: datetime
) -> Wanted | str:
    """The request the robot's call asks for (`ref` its `event_token`: a repeated call is the
    same request), or why there is none (the business process is answered with it)."""
    dispatch = config.dispatch or Dispatch()
    survey = call.properties.get("survey", "").strip()
    names = config.survey_names()
    if survey not in names:
        known = ", ".join(sorted(names)) or "none"
        return f"the robot's survey {survey!r} is none of the portal's surveys ({known})"
    channel = call.properties.get("channel", "").strip() or None
    if channel is not None and channel not in ("email", "portal"):
        return f"the robot's channel {channel!r}: email or portal expected"
    if (channel or dispatch.channel_for(survey)) == "portal" and dispatch.portal_channel is None:
        return "the portal channel is not configured (dispatch.portal_channel)"
    delay = call.properties.get("delay_minutes", "").strip() or "0"
    if not (delay.isascii() and delay.isdigit()) or int(delay) > MAX_ROBOT_DELAY_MINUTES:
        return (
            f"the robot's delay_minutes {delay[:20]!r}: a whole number of minutes expected,"
            f" at most {MAX_ROBOT_DELAY_MINUTES} (a year)"
        )
    wanted = _wanted(
        config,
        dispatch,
        survey,
        source="robot",
        ref=call.event_token,
        contact_id=document.contact_id,
        company_id=document.company_id,
        responsible_id=document.responsible_id,
        sale_deal_id=call.entity_id if call.entity_type_id == DEAL_ENTITY_TYPE_ID else None,
    )
    return replace(
        wanted,
        channel="portal" if channel == "portal" else "email" if channel else wanted.channel,
        robot_token=call.event_token,
        send_after=now + timedelta(minutes=int(delay)) if int(delay) else None,
    )


def robot_reason(state: RequestState, reason: str | None) -> str:
    """Why a request the robot asked for was not sent, as the business process is told."""
    if reason is None:
        return state
    return SKIP_TEXTS.get(reason, reason)


@dataclass(frozen=True)
class CampaignContact:
    contact_id: int
    company_id: int | None = None
    responsible_id: int | None = None


def requests_for_campaign(
    campaign_id: str, survey: str, contacts: list[CampaignContact], config: PortalConfig
) -> list[Wanted]:
    """One request per contact (each contact once) of a campaign for `survey`."""
    dispatch = config.dispatch or Dispatch()
    seen: set[int] = set()
    wanted = []
    for contact in contacts:
        if contact.contact_id in seen:
            continue
        seen.add(contact.contact_id)
        wanted.append(
            _wanted(
                config,
                dispatch,
                survey,
                source="campaign",
                ref=campaign_id,
                contact_id=contact.contact_id,
                company_id=contact.company_id,
                responsible_id=contact.responsible_id,
            )
        )
    return wanted


@dataclass(frozen=True)
class ContactHistory:
    """What the register knows about a contact and a survey."""

    opted_out: bool = False
    last_asked_at: datetime | None = None
    """When the contact was last asked about this survey (a request not skipped)."""


def skip_reason(
    wanted: Wanted, history: ContactHistory, now: datetime, every_days: int
) -> SkipReason | None:
    """Why `wanted` is not sent (recorded, never retried), or None: it is scheduled."""
    if wanted.contact_id is None:
        return "no_contact"
    if wanted.channel == "portal" and wanted.kind == "segment" and wanted.sale_deal_id is None:
        return "no_deal"
    if history.opted_out:
        return "opted_out"
    if (
        every_days > 0
        and history.last_asked_at is not None
        and now - history.last_asked_at < timedelta(days=every_days)
    ):
        return "asked_recently"
    return None


def window_opening(at: datetime, window: SendWindow, tz: ZoneInfo) -> datetime:
    """The first moment at or after `at` inside the send window (in the portal's time zone)."""
    local = at.astimezone(tz)
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        if WEEKDAYS[day.weekday()] not in window.weekdays:
            continue
        opens = datetime.combine(day, window.start, tz)
        closes = datetime.combine(day, window.end, tz)
        if offset == 0 and local >= closes:
            continue
        return max(opens, local) if offset == 0 else opens
    raise ValueError("the send window never opens")  # SendWindow forbids an empty week


@dataclass(frozen=True)
class Progress:
    """A request as the timer sees it."""

    state: RequestState
    link_ready: bool
    sends: int
    """Messages sent so far (the first and the reminders)."""
    last_sent_at: datetime | None
    expires_at: datetime | None
    sending: bool = False
    """A send is in flight (a portal send crm_sync has not confirmed yet)."""
    send_after: datetime | None = None
    """The first message goes out no earlier (the robot's delay)."""


@dataclass(frozen=True)
class Send:
    n: int
    """0: the first message; n: the n-th reminder."""


@dataclass(frozen=True)
class Wait:
    until: datetime | None
    """None: until an event (the link, crm_sync's outcome) arrives."""


@dataclass(frozen=True)
class Close:
    state: Literal["unanswered", "expired"]


Step = Send | Wait | Close


def next_step(  # noqa: PLR0911 - one return per outcome, in the order they are decided
    progress: Progress, now: datetime, dispatch: Dispatch, tz: ZoneInfo
) -> Step:
    """What a request needs at `now`: a send (inside the window), to wait (until when), or to
    be closed as unanswered (after the last reminder) or expired (its link no longer works)."""
    if progress.state in FINAL_STATES or progress.state == "answered":
        return Wait(None)
    if not progress.link_ready or progress.sending:
        return Wait(None)
    if progress.expires_at is not None and now >= progress.expires_at:
        return Close("expired")
    reminders = dispatch.reminders.after_days
    if progress.sends == 0:
        due = max(now, progress.send_after or now)
    elif progress.sends <= len(reminders):
        assert progress.last_sent_at is not None
        due = progress.last_sent_at + timedelta(days=reminders[progress.sends - 1])
    else:
        assert progress.last_sent_at is not None
        closes = progress.last_sent_at + timedelta(days=dispatch.unanswered.after_days)
        return Close("unanswered") if now >= closes else Wait(closes)
    if now < due:
        return Wait(due)
    opening = window_opening(now, dispatch.window, tz)
    if opening > now:
        return Wait(opening)
    return Send(progress.sends)


def state_after_send(n: int, opened: bool) -> RequestState:
    """The register's state once send `n` went out."""
    if n > 0:
        return "reminded"
    return "opened" if opened else "sent"
