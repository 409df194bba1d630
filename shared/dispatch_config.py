"""The portal YAML's `dispatch` section: when b24-nps asks customers itself, how, and how often;
how the leads and tasks b24-nps created are followed until someone acts (`followup`), and the
weekly digest e-mail (`digest`) (docs/dispatch.md; config/portal.example.yaml). Pure: no I/O.

The section is optional; without it nothing is sent. Survey names are those of `deal_surveys`
(an NPS deal per request) and of `survey.segments` (a smart-process item per answer); the
portal YAML checks that each name it refers to exists (`PortalConfig`).
"""

from __future__ import annotations

from datetime import time
from email.utils import parseaddr
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Channel = Literal["email", "portal"]
"""`email`: b24-nps sends the message itself over SMTP; `portal`: the link is written into a
deal field and the portal's own robots send it (SMS, WhatsApp, Telegram, e-mail)."""
Language = Literal["ru", "en"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_EVERY_DAYS = 90
TimeOfDay = time
"""`time` under another name, for a field called `time`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SendWindow(_Strict):
    """Sends (first messages and reminders) happen only inside this window, in the portal's time
    zone (`portal.timezone`); a request due outside it waits for the next opening."""

    start: time = time(9, 0)
    end: time = time(20, 0)
    weekdays: tuple[Weekday, ...] = WEEKDAYS

    @model_validator(mode="after")
    def _opens(self) -> SendWindow:
        if self.end <= self.start:
            raise ValueError(f"window: end {self.end:%H:%M} must be after start {self.start:%H:%M}")
        if not self.weekdays:
            raise ValueError("window.weekdays: give at least one day (mon … sun)")
        return self


class Reminders(_Strict):
    """Reminders through the same channel, each `after_days[i]` days after the previous send;
    their number is the list's length (empty: none)."""

    after_days: tuple[int, ...] = Field(default=(3,), max_length=5)

    @field_validator("after_days")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(days < 1 for days in value):
            raise ValueError("after_days: each delay is a whole number of days, at least 1")
        return value


class Unanswered(_Strict):
    """`after_days` after the last send (first message or reminder), an unanswered request is
    marked `unanswered`; with `task`, its responsible employee gets a task to call the customer."""

    after_days: int = Field(default=3, ge=1)
    task: bool = True
    responsible_id: int | None = Field(default=None, gt=0)
    """Who gets the call task when the request has no responsible (no sales deal)."""
    deadline_hours: int = Field(default=24, gt=0)


class EmailChannel(_Strict):
    sender: str = Field(min_length=3, description='From: "Demo Clinic <nps@example.com>"')
    reply_to: str | None = None


class PortalChannel(_Strict):
    """Delivery through the portal's robots: the personal link goes into `link_field` of the
    deal (the NPS deal of a deal survey, else the sales deal), then the automation `trigger`
    (`crm.automation.trigger`, code) fires, or the deal moves to `stage`; a timeline entry tells
    the manager."""

    link_field: str = Field(min_length=1)
    trigger: str | None = Field(default=None, min_length=1)
    reminder_trigger: str | None = Field(default=None, min_length=1)
    """Fired for a reminder (default: `trigger`)."""
    stage: str | None = Field(default=None, min_length=1)
    timeline: bool = True

    @model_validator(mode="after")
    def _one_way(self) -> PortalChannel:
        if (self.trigger is None) == (self.stage is None):
            raise ValueError(
                "portal_channel: give exactly one of trigger (an automation trigger's code) or"
                " stage (a stage whose robots send the message)"
            )
        return self


class SaleTrigger(_Strict):
    """A sales deal of `funnel` reaching a success stage (by the stage's semantics) asks its
    contact: `survey` names a deal survey (an NPS deal is created with the sale's contact,
    company and responsible), `products` asks one equipment survey per product row whose portal
    product id `dispatch.products` maps to a segment's SKU."""

    funnel: int = Field(ge=0, description="the sales deal category (0 = the default funnel)")
    survey: str | None = Field(default=None, min_length=1)
    products: bool = False

    @model_validator(mode="after")
    def _asks_something(self) -> SaleTrigger:
        if self.survey is None and not self.products:
            raise ValueError(
                f"sales (funnel {self.funnel}): give survey (a deal survey's name) or"
                " products: true (one equipment survey per product sold), or both"
            )
        return self


class SurveyPolicy(_Strict):
    """Per-survey overrides of the section's defaults."""

    every_days: int | None = Field(default=None, ge=0)
    channel: Channel | None = None
    language: Language | None = None


FollowedAction = Literal["service", "marketing", "task", "call_task"]
"""What dispatch follows: the leads of `service` and `marketing` actions, the head of sales'
tasks (`task`) and its own call tasks (`call_task`)."""
FOLLOWED_ACTIONS: tuple[FollowedAction, ...] = ("service", "marketing", "task", "call_task")
ESCALATION_ACTION = "escalation"
"""The action of a followed escalation task (the one task an overdue follow-up gets): followed
like the others until its deadline (`escalation_deadline_hours`), never escalated itself."""
FOLLOWUP_ACTIONS: tuple[str, ...] = (*FOLLOWED_ACTIONS, ESCALATION_ACTION)
"""The actions of the follow-up's rows."""
SlaUntil = Literal["acted", "closed"]


class WorkingHours(_Strict):
    """The hours an SLA counts with `working_hours: true`, in the portal's time zone."""

    start: time = time(9, 0)
    end: time = time(18, 0)
    weekdays: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")

    @model_validator(mode="after")
    def _opens(self) -> WorkingHours:
        if self.end <= self.start:
            raise ValueError(
                f"working_hours: end {self.end:%H:%M} must be after start {self.start:%H:%M}"
            )
        if not self.weekdays:
            raise ValueError("working_hours.weekdays: give at least one day (mon … sun)")
        return self


class Sla(_Strict):
    """How long a followed lead or task may wait: `sla_hours` after its creation (counted in
    working hours with `working_hours: true`) someone must have acted on it (`until: acted`: in
    work or closed) or closed it (`until: closed`); else one escalation task goes to
    `escalate_to` (default: the section's `escalate_to`, else the head of service,
    `routing.service.responsible_id`)."""

    sla_hours: float = Field(gt=0)
    working_hours: bool = False
    until: SlaUntil = "acted"
    escalate: bool = True
    escalate_to: int | None = Field(default=None, gt=0)


class Followup(_Strict):
    """Following what b24-nps created (leads, tasks) until someone acts: their state read in
    batches, at most every `read_every_minutes` while young and less often as they age (at most
    `read_max_minutes` apart), for `stop_after_days`; an SLA per action."""

    enabled: bool = True
    service: Sla | None = None
    marketing: Sla | None = None
    task: Sla | None = None
    call_task: Sla | None = None
    working_hours: WorkingHours = WorkingHours()
    escalate_to: int | None = Field(default=None, gt=0)
    escalation_deadline_hours: int = Field(default=4, gt=0)
    """The escalation task's deadline, from its creation."""
    read_every_minutes: int = Field(default=15, ge=1)
    read_max_minutes: int = Field(default=240, ge=1)
    stop_after_days: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _read_bounds(self) -> Followup:
        if self.read_max_minutes < self.read_every_minutes:
            raise ValueError(
                f"followup.read_max_minutes ({self.read_max_minutes}) must be at least"
                f" read_every_minutes ({self.read_every_minutes})"
            )
        return self

    def sla(self, action: str) -> Sla | None:
        """The SLA of `action` (None: followed without one); an escalation task's is its
        deadline, to be closed by then, never escalated."""
        if action == ESCALATION_ACTION:
            return Sla(sla_hours=self.escalation_deadline_hours, until="closed", escalate=False)
        value = getattr(self, action, None) if action in FOLLOWED_ACTIONS else None
        return value if isinstance(value, Sla) else None


class Digest(_Strict):
    """The weekly digest e-mail: NPS of the last 7 days and its change against the 7 before, the
    worst comments, the overdue follow-ups; sent on `weekday` at `time` (portal time zone) to
    `to`."""

    to: tuple[str, ...] = Field(min_length=1)
    weekday: Weekday = "mon"
    time: TimeOfDay = TimeOfDay(9, 0)
    language: Language | None = None
    """Default: the section's `language`."""
    comments: int = Field(default=5, ge=0, le=50)
    """How many of the worst comments it quotes."""
    sender: str | None = Field(default=None, min_length=3)
    """From: default `dispatch.email.sender`."""

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            _, bare = parseaddr(address)
            local, at, domain = bare.rpartition("@")
            if not (local and at and "." in domain) or any(ch.isspace() for ch in bare):
                raise ValueError(
                    f"to: {address!r} is not an e-mail address (expected name@example.com or"
                    ' "Name <name@example.com>")'
                )
        return tuple(address.strip() for address in value)


class Dispatch(_Strict):
    channel: Channel = "email"
    language: Language = "ru"
    every_days: int = Field(default=DEFAULT_EVERY_DAYS, ge=0)
    """A contact is asked about one survey at most once per this many days (0: no limit)."""
    window: SendWindow = SendWindow()
    reminders: Reminders = Reminders()
    unanswered: Unanswered = Unanswered()
    email: EmailChannel | None = None
    portal_channel: PortalChannel | None = None
    sales: tuple[SaleTrigger, ...] = ()
    products: dict[str, str] = Field(default_factory=dict)
    """The portal's product id (a product row's `productId`) → an equipment segment's SKU."""
    surveys: dict[str, SurveyPolicy] = Field(default_factory=dict)
    followup: Followup = Followup()
    digest: Digest | None = None

    def policy(self, survey: str) -> SurveyPolicy:
        return self.surveys.get(survey, SurveyPolicy())

    def every_days_for(self, survey: str) -> int:
        days = self.policy(survey).every_days
        return self.every_days if days is None else days

    def channel_for(self, survey: str) -> Channel:
        return self.policy(survey).channel or self.channel

    def language_for(self, survey: str) -> Language:
        return self.policy(survey).language or self.language

    def sale_trigger(self, funnel: int) -> SaleTrigger | None:
        return next((trigger for trigger in self.sales if trigger.funnel == funnel), None)

    def channel_problems(self) -> list[str]:
        """A channel in use without its settings."""
        used = {self.channel} | {p.channel for p in self.surveys.values() if p.channel}
        problems = []
        if "email" in used and self.email is None:
            problems.append(
                "dispatch.email: the email channel is used but not set up; give"
                ' dispatch.email.sender ("Company <nps@example.com>")'
            )
        if self.digest is not None and self.digest.sender is None and self.email is None:
            problems.append(
                "dispatch.digest.sender: the digest needs a sender; give dispatch.digest.sender"
                ' or dispatch.email.sender ("Company <nps@example.com>")'
            )
        if "portal" in used and self.portal_channel is None:
            problems.append(
                "dispatch.portal_channel: the portal channel is used but not set up; give"
                " link_field and trigger (or stage)"
            )
        channel = self.portal_channel
        if (
            channel is not None
            and channel.stage is not None
            and channel.reminder_trigger is None
            and self.reminders.after_days
        ):
            problems.append(
                "dispatch.portal_channel.reminder_trigger: reminders are configured and the"
                " first message moves the deal to a stage, which a reminder cannot do again;"
                " give a reminder_trigger (an automation trigger's code) or"
                " reminders.after_days: []"
            )
        funnels = [trigger.funnel for trigger in self.sales]
        problems.extend(
            f"dispatch.sales: funnel {funnel} appears twice"
            for funnel in sorted({f for f in funnels if funnels.count(f) > 1})
        )
        return problems

    def summary(self) -> list[str]:
        """What dispatch will do, in words for `nps config check`."""
        days = ", ".join(str(d) for d in self.reminders.after_days) or "none"
        weekdays = ", ".join(self.window.weekdays)
        lines = [
            f"dispatch: by {self.channel} in {self.language}, a contact asked about one survey at"
            f" most every {self.every_days} days, sends {self.window.start:%H:%M}-"
            f"{self.window.end:%H:%M} ({weekdays}), reminders after {days} day(s), unanswered"
            f" {self.unanswered.after_days} day(s) after the last message"
            + (", then a call task" if self.unanswered.task else ""),
        ]
        for trigger in self.sales:
            asked = [f"deal survey {trigger.survey!r}"] if trigger.survey else []
            if trigger.products:
                asked.append(f"one survey per product sold ({len(self.products)} mapped)")
            lines.append(
                f"dispatch: a won deal of funnel {trigger.funnel} asks {' and '.join(asked)}"
            )
        followed = [
            f"{action} {sla.sla_hours:g} h{' (working)' if sla.working_hours else ''}"
            for action, sla in (
                ("service", self.followup.service),
                ("marketing", self.followup.marketing),
                ("task", self.followup.task),
                ("call_task", self.followup.call_task),
            )
            if sla is not None
        ]
        if self.followup.enabled:
            lines.append(
                "dispatch: follow-up of created leads and tasks, SLA "
                + (", ".join(followed) or "none (followed, never escalated)")
            )
        if self.digest is not None:
            lines.append(
                f"dispatch: weekly digest on {self.digest.weekday} {self.digest.time:%H:%M} to"
                f" {len(self.digest.to)} recipient(s)"
            )
        return lines
