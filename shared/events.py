"""Event contracts: the pydantic models every service publishes and consumes
(docs/architecture.md, Events; the generated docs/asyncapi.json).

Each event carries `event_id` (also the AMQP `message_id`), `schema_version`, `occurred_at`,
`correlation_id` (one per survey answer, followed through every service and log line) and
`causation_id` (the `event_id` of the event that caused it).

Derived events get *deterministic* ids (`derived_id`) so that a redelivered input republishes
the very same message ids, which consumers drop as duplicates.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Kind = Literal["cosmetics", "equipment", "deal"]
"""`deal`: an answer held by an NPS deal (`deal_surveys`), `entity_type_id` 2."""
DEAL_ENTITY_TYPE_ID = 2
"""Bitrix24's entity type id of deals (`crm.item.*` with `entityTypeId` 2)."""
Category = Literal["promoter", "passive", "detractor"]
Scale = Literal["0-10", "1-10", "binary"]

_NAMESPACE = uuid.UUID("6f1d7a52-3c0e-4f0b-9a4e-8d2b1c5e7f10")


def derived_id(*parts: object) -> uuid.UUID:
    """A stable UUID for an event derived from `parts` (the cause's id and a discriminator)."""
    return uuid.uuid5(_NAMESPACE, "|".join(str(part) for part in parts))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Envelope fields shared by every event."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str
    causation_id: str | None = None

    NAME: ClassVar[str]

    def routing_key(self) -> str:
        return self.NAME

    def caused(self, *discriminator: object) -> dict[str, Any]:
        """Envelope kwargs for an event caused by this one (deterministic id, same correlation)."""
        return {
            "event_id": derived_id(self.event_id, *discriminator),
            "correlation_id": self.correlation_id,
            "causation_id": str(self.event_id),
        }


class PortalRef(BaseModel):
    """Which Bitrix24 portal an event came from (`auth[member_id]`, `auth[domain]`)."""

    model_config = ConfigDict(frozen=True)

    member_id: str | None = None
    domain: str | None = None

    @property
    def key(self) -> str:
        """A stable key for per-portal state (dedup, rate budget, answers)."""
        return self.member_id or self.domain or "default"


class WebhookReceived(Event):
    """A Bitrix24 event or robot call accepted by ingest (stored before it was acknowledged), a
    catch-up sweep's submission, or (`source` "reread") ingest's own request to read an item once
    more after publishing two of its states within one second (docs/ingest.md)."""

    NAME: ClassVar[str] = "webhook.received"

    portal: PortalRef
    source: Literal["event", "robot", "sweep", "reread"]
    event: str
    entity_type_id: int
    item_id: int = Field(gt=0)
    ts: int | None = None
    fields: dict[str, Any] | None = None
    """Item field values when the caller sent them (robot webhook); otherwise read via REST."""


class ProductAnswer(BaseModel):
    """One product's score inside a survey answer; `score=None` means ticked but skipped."""

    model_config = ConfigDict(frozen=True)

    sku: str
    name: str
    score: int | None = None


class SubmittedAnswer(BaseModel):
    """What a survey answer says: a `FormSubmitted` without the envelope and the portal. Ingest's
    mapping reads it from an item or a deal, and the event is built from it in one call
    (`FormSubmitted.of`), so a field is declared here once and reaches the event."""

    model_config = ConfigDict(frozen=True)

    entity_type_id: int
    item_id: int
    category_id: int
    segment: str
    kind: Kind
    scale: Scale
    contact_id: int | None = None
    responsible_id: int | None = None
    comment: str | None = None
    service_request: bool = False
    submitted_at: AwareDatetime
    updated_at: AwareDatetime
    answers: tuple[ProductAnswer, ...]
    revision: int = Field(default=0, ge=0)
    """Orders two states of the item with the same `updated_at` (Bitrix24 keeps seconds): ingest
    publishes a state that differs from the last one published within the same second with a
    revision one higher; a version is newer when its (`updated_at`, `revision`) is greater."""


class FormSubmitted(Event, SubmittedAnswer):
    """A survey answer read from the NPS smart process (one entry per product answered) or from
    an NPS deal (kind `deal`, `entity_type_id` 2, one entry: the deal survey's product)."""

    NAME: ClassVar[str] = "form.submitted"

    portal: PortalRef

    @classmethod
    def of(
        cls,
        answer: SubmittedAnswer,
        *,
        portal: PortalRef,
        event_id: uuid.UUID,
        correlation_id: str,
        causation_id: str | None,
    ) -> FormSubmitted:
        """The event of `answer` from `portal`, with the envelope `Event.caused` gives."""
        content = {name: getattr(answer, name) for name in SubmittedAnswer.model_fields}
        return cls(
            event_id=event_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            portal=portal,
            **content,
        )


class ScoredAnswer(BaseModel):
    """One scored product answer, as stored by scoring and carried to router and crm_sync."""

    model_config = ConfigDict(frozen=True)

    answer_id: str
    portal: PortalRef
    entity_type_id: int
    item_id: int
    category_id: int
    segment: str
    kind: Kind
    sku: str
    product_name: str
    scale: Scale
    score: int
    category: Category
    comment: str | None = None
    service_request: bool = False
    contact_id: int | None = None
    responsible_id: int | None = None
    submitted_at: AwareDatetime
    updated_at: AwareDatetime
    revision: int = 0
    """The answer's revision in scoring: it grows each time a newer version of the item changes
    the answer, so of two states of one answer with the same times the higher is the later."""


class NpsScored(Event):
    """Published as `nps.scored.<kind>.<category>`, one per scored product answer."""

    NAME: ClassVar[str] = "nps.scored"

    answer: ScoredAnswer
    supersedes: bool = False
    """True when this re-scores an answer already scored from an earlier version of the item."""
    previous_category: Category | None = None
    previous_score: int | None = None

    def routing_key(self) -> str:
        return f"{self.NAME}.{self.answer.kind}.{self.answer.category}"


URGENT_SUFFIX = "urgent"


class RouteAction(Event):
    """Published as `route.<action>`, or `route.<action>.urgent` when it is `urgent`: something to
    do about an answer."""

    NAME: ClassVar[str] = "route"

    action_id: str
    action: str
    rule: str
    answer: ScoredAnswer
    params: dict[str, Any] = Field(default_factory=dict)
    urgent: bool = False
    """crm_sync's urgent lane: its own queue, consumed first, the next slots of the rate budget
    (docs/crm_sync.md, Lanes)."""

    def routing_key(self) -> str:
        key = f"{self.NAME}.{self.action}"
        return f"{key}.{URGENT_SUFFIX}" if self.urgent else key


WriteOutcome = Literal[
    "created", "existing", "patched", "unchanged", "conflict", "skipped", "sent", "failed"
]


class CrmWritten(Event):
    """Published as `crm.written.<action>` once crm_sync's effect on the portal is durable."""

    NAME: ClassVar[str] = "crm.written"

    action_id: str
    action: str
    outcome: WriteOutcome
    entity_type: str | None = None
    entity_id: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def routing_key(self) -> str:
        return f"{self.NAME}.{self.action}"


class SurveyAnswered(Event):
    """An answer given on the survey page (each change a new `version`), for crm_sync to write
    into the portal, where it then comes back through ingest like any form's answer."""

    NAME: ClassVar[str] = "survey.answered"

    request_id: uuid.UUID
    version: int = Field(ge=1)
    portal: PortalRef
    contact_id: int
    category_id: int
    scale: Scale
    answers: list[ProductAnswer]
    """The products answered about (for cosmetics: the ones tested; `score=None`: not scored)."""
    service_request: bool = False
    comment: str | None = None
    answered_at: AwareDatetime
    deal_id: int | None = None
    """A deal survey's answer: the NPS deal it is written into (`category_id` is then the deal
    survey's deal category); None for a smart-process segment."""


class SoldProduct(BaseModel):
    """One product row of a sales deal (`crm.item.productrow.list`)."""

    model_config = ConfigDict(frozen=True)

    product_id: int
    name: str
    quantity: float = 1


class SaleClosed(Event):
    """A sales deal of a funnel `dispatch.sales` watches reached a success stage (its stage's
    semantics "S", read from the portal), or the stage's robot asked ingest to survey it.
    Published by ingest through the outbox once per deal (docs/dispatch.md, Triggers)."""

    NAME: ClassVar[str] = "sale.closed"

    portal: PortalRef
    source: Literal["event", "robot", "sweep"]
    deal_id: int = Field(gt=0)
    category_id: int = Field(ge=0)
    stage_id: str
    contact_id: int | None = None
    company_id: int | None = None
    responsible_id: int | None = None
    closed_at: AwareDatetime
    products: tuple[SoldProduct, ...] = ()


class NewNpsDeal(BaseModel):
    """Create the NPS deal of a deal survey's request (`crm.item.add`, entityTypeId 2)."""

    model_config = ConfigDict(frozen=True)

    category_id: int = Field(ge=0)
    title: str
    contact_id: int
    company_id: int | None = None
    responsible_id: int | None = None
    sale_deal_id: int | None = None
    sale_deal_field: str | None = None
    """The deal survey's field that links the sales deal (`sale_deal_field`)."""


class PortalSend(BaseModel):
    """Deliver a link through the portal's robots: the link into `link_field` of the deal, then
    the automation trigger `trigger` or the move to `stage`, and a timeline entry."""

    model_config = ConfigDict(frozen=True)

    deal_id: int = Field(gt=0)
    link_field: str
    url: str
    trigger: str | None = None
    stage: str | None = None
    timeline_title: str | None = None
    timeline_text: str | None = None
    reminder: int = Field(default=0, ge=0)
    """0: the first message; n: the n-th reminder (its `url` then ends in `m=<n>`, so the link
    field tells which message it was written for)."""

    @model_validator(mode="after")
    def _one_way(self) -> PortalSend:
        if (self.trigger is None) == (self.stage is None):
            raise ValueError("exactly one of trigger and stage is expected")
        return self


class CallTask(BaseModel):
    """A task for the responsible employee: call the customer who did not answer."""

    model_config = ConfigDict(frozen=True)

    responsible_id: int = Field(gt=0)
    title: str
    description: str
    deadline_hours: int = Field(gt=0)
    contact_id: int | None = None
    deal_id: int | None = None

    @model_validator(mode="after")
    def _bound(self) -> CallTask:
        if self.contact_id is None and self.deal_id is None:
            raise ValueError("a call task is bound to a deal or a contact; neither is given")
        return self


class RobotAnswer(BaseModel):
    """Answer a waiting business process (`bizproc.event.send`): the "Send NPS survey" robot's
    launch `event_token` and its return values, `sent` and, when not sent, why."""

    model_config = ConfigDict(frozen=True)

    event_token: str = Field(min_length=1)
    sent: bool
    reason: str | None = None


DispatchAction = Literal["nps_deal", "survey_send", "call_task", "robot_answer"]


class DispatchCommand(Event):
    """Published by dispatch as `dispatch.<action>`: a write for crm_sync (the only writer) on
    behalf of a survey request. Exactly one of `nps_deal`, `survey_send`, `call_task` is set.
    crm_sync carries it out once per `command_id` and answers with `crm.written.<action>`
    (`action_id` = `command_id`, `entity_id` = the deal or task)."""

    NAME: ClassVar[str] = "dispatch"

    command_id: str
    request_id: uuid.UUID
    portal: PortalRef
    nps_deal: NewNpsDeal | None = None
    survey_send: PortalSend | None = None
    call_task: CallTask | None = None
    robot_answer: RobotAnswer | None = None

    @model_validator(mode="after")
    def _one_command(self) -> DispatchCommand:
        given = [name for name in get_args(DispatchAction) if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"exactly one command is expected, got {given or 'none'}")
        return self

    @property
    def action(self) -> DispatchAction:
        return next(name for name in get_args(DispatchAction) if getattr(self, name))

    def routing_key(self) -> str:
        return f"{self.NAME}.{self.action}"


Language = Literal["ru", "en"]


class SurveyRequested(Event):
    """Dispatch asks the survey service for a personal link (docs/dispatch.md): the survey page
    stores the request under `request_id` and answers `survey.ready`."""

    NAME: ClassVar[str] = "survey.requested"

    request_id: uuid.UUID
    portal: PortalRef
    contact_id: int
    category_id: int
    """The segment's category, or a deal survey's deal category with `deal_id`."""
    sku: str | None = None
    """The equipment segment's product (None: the segment's own); None for cosmetics; a deal
    survey's own product or None."""
    lang: Language
    deal_id: int | None = None


class SurveyReady(Event):
    """The survey service stored a dispatched request: its personal link, the opt-out link and
    the company's name and logo for the message."""

    NAME: ClassVar[str] = "survey.ready"

    request_id: uuid.UUID
    portal: PortalRef
    url: str
    optout_url: str
    company: str
    logo_url: str | None = None
    expires_at: AwareDatetime


class SurveyOpened(Event):
    """A personal link was opened for the first time (published once per request)."""

    NAME: ClassVar[str] = "survey.opened"

    request_id: uuid.UUID
    portal: PortalRef
    opened_at: AwareDatetime


class SurveyOptedOut(Event):
    """The customer asked never to be asked again (the opt-out link of a message)."""

    NAME: ClassVar[str] = "survey.opted_out"

    request_id: uuid.UUID
    portal: PortalRef
    contact_id: int
    opted_out_at: AwareDatetime


RequestState = Literal[
    "scheduled",
    "skipped",
    "sent",
    "opened",
    "answered",
    "reminded",
    "unanswered",
    "expired",
    "failed",
]


class SurveyRequestChanged(Event):
    """Published by dispatch as `dispatch.request.<state>` each time a request in the register
    changes state, for integrators (docs/dispatch.md, The register)."""

    NAME: ClassVar[str] = "dispatch.request"

    request_id: uuid.UUID
    portal: PortalRef
    survey: str
    source: Literal["sale", "robot", "campaign"]
    contact_id: int
    channel: Literal["email", "portal"]
    state: RequestState
    reason: str | None = None
    reminders: int = 0
    deal_id: int | None = None
    """The NPS deal (a deal survey's request)."""
    sale_deal_id: int | None = None
    sku: str | None = None
    changed_at: AwareDatetime

    def routing_key(self) -> str:
        return f"{self.NAME}.{self.state}"


class PortalEntityUpdated(Event):
    """A lead or task changed in the portal (`ONCRMLEADUPDATE`, `ONTASKUPDATE` bound to ingest's
    webhook handler), published by ingest as `portal.updated.<entity_type>` for dispatch's
    follow-up to read it at once instead of at its next scheduled read (docs/dispatch.md,
    Follow-up). The id alone: the state is read through the REST API, in the follow-up's batch."""

    NAME: ClassVar[str] = "portal.updated"

    portal: PortalRef
    event: str
    """The Bitrix24 event: `ONCRMLEADUPDATE` or `ONTASKUPDATE`."""
    entity_type: Literal["lead", "task"]
    entity_id: int = Field(gt=0)
    ts: int | None = None
    """The event's Unix time (`ts`) when the portal sent it."""

    def routing_key(self) -> str:
        return f"{self.NAME}.{self.entity_type}"


class RobotCalled(Event):
    """The portal's "Send NPS survey" robot reached a CRM document (a deal or an NPS item) and
    called the application (`POST /app/robot`, its `application_token` verified), published by
    the application for dispatch (docs/app.md, The robot). Its `event_id` derives from the
    portal and `event_token`, so a repeated call is the same message; dispatch asks once per
    `event_token` and answers the business process once the survey is sent or skipped."""

    NAME: ClassVar[str] = "robot.called"

    portal: PortalRef
    code: str
    event_token: str = Field(min_length=1)
    entity_type_id: int = Field(gt=0)
    entity_id: int = Field(gt=0)
    properties: dict[str, str] = Field(default_factory=dict)
    """The robot's properties as the portal sent them (`survey`, `channel`, `delay_minutes`);
    dispatch reads them and answers an unusable one with the reason."""


EVENT_TYPES: tuple[type[Event], ...] = (
    WebhookReceived,
    FormSubmitted,
    NpsScored,
    RouteAction,
    CrmWritten,
    SurveyAnswered,
    SaleClosed,
    DispatchCommand,
    SurveyRequested,
    SurveyReady,
    SurveyOpened,
    SurveyOptedOut,
    SurveyRequestChanged,
    PortalEntityUpdated,
    RobotCalled,
)
