"""The AsyncAPI document of the whole pipeline: every event, routing key and core queue.

It is built from the code itself: the event models of `shared/events.py`, the queues and bindings
of `shared/topology.py` and the actions of `services/router/rules.py`, declared on a
documentation-only FastStream broker that never connects. `nps asyncapi` writes it to
`docs/asyncapi.json`; `nps asyncapi --check` (and a unit test) fails when the committed document
no longer matches the code.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from itertools import product
from pathlib import Path
from typing import get_args

from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.specification import AsyncAPI

from services.router.rules import BUILTIN_ACTIONS, LANED_ACTIONS
from shared.events import (
    Category,
    CrmWritten,
    DispatchCommand,
    Event,
    FormSubmitted,
    Kind,
    NpsScored,
    PortalEntityUpdated,
    RequestState,
    RobotCalled,
    RouteAction,
    SaleClosed,
    SurveyAnswered,
    SurveyOpened,
    SurveyOptedOut,
    SurveyReady,
    SurveyRequestChanged,
    SurveyRequested,
    WebhookReceived,
)
from shared.messaging import NPS_EXCHANGE
from shared.topology import (
    CRM_SYNC_ACTIONS,
    CRM_SYNC_DISPATCH,
    CRM_SYNC_SURVEYS,
    CRM_SYNC_URGENT,
    DISPATCH_ANSWERS,
    DISPATCH_FOLLOWUP,
    DISPATCH_LINKS,
    DISPATCH_OPENS,
    DISPATCH_OPTOUTS,
    DISPATCH_ROBOTS,
    DISPATCH_SALES,
    DISPATCH_UPDATES,
    DISPATCH_WRITTEN,
    INGEST_HYDRATE,
    REGISTER_TAP,
    ROUTER_SCORED,
    SCORING_SUBMISSIONS,
    SURVEY_REQUESTS,
    WRITTEN_TAP,
    QueueSpec,
)

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"

DESCRIPTION = """\
b24-nps: an event-driven pipeline that closes the NPS feedback loop for Bitrix24 portals.

Every event is JSON, persistent, published on the topic exchange `nps` with `message_id` =
`event_id`, publisher-confirmed and `mandatory` (an unroutable message is an error). Every
event carries `event_id`, `schema_version`, `occurred_at`, `correlation_id` (one per survey
answer) and `causation_id`. Core queues are durable quorum queues; each has a dead-letter queue
`<queue>.dlq` on the direct exchange `nps.dlx`. An integrator's reaction is one more queue bound
to `nps.scored.<kind>.<category>` or `route.<action>`.

Kinds: `cosmetics` and `equipment` are answers held by items of the NPS smart process; `deal` is
an answer held by an NPS deal (a deal survey's funnel, `entity_type_id` 2, `item_id` = the deal's
id), e.g. `nps.scored.deal.detractor`. Deal answers cause `route.stage` (the NPS deal moved to its
funnel's success or failure stage; `crm.written.stage` says `patched`, `unchanged`, `conflict` when
a person decided otherwise, or `skipped`) and, for detractors, `route.task`.
"""

# Who publishes what (docs/architecture.md, Events): (service, model, routing keys, description).
_KINDS: tuple[str, ...] = get_args(Kind)
_CATEGORIES: tuple[str, ...] = get_args(Category)
PUBLISHED: tuple[tuple[str, type[Event], tuple[str, ...], str], ...] = (
    (
        "ingest",
        WebhookReceived,
        ("webhook.received",),
        "A Bitrix24 event, robot call or catch-up sweep hit, stored before it was acknowledged.",
    ),
    (
        "ingest",
        FormSubmitted,
        ("form.submitted",),
        "A survey answer read from the NPS smart process (one entry per product answered) or "
        "from an NPS deal (kind `deal`, entity type 2).",
    ),
    (
        "scoring",
        NpsScored,
        tuple(f"nps.scored.{kind}.{category}" for kind, category in product(_KINDS, _CATEGORIES)),
        "One scored product answer; `supersedes` marks a re-scored answer.",
    ),
    (
        "router",
        RouteAction,
        tuple(f"route.{action}" for action in BUILTIN_ACTIONS),
        "An action about an answer, carried out by crm_sync. `action_id` (= `message_id`) is "
        "derived from the answer, the rule and its outcome: the same action always has the "
        "same id.",
    ),
    (
        "router",
        RouteAction,
        tuple(f"route.{action}.urgent" for action in LANED_ACTIONS),
        "The same, in crm_sync's urgent lane (`urgent` true: `routing.urgent`, or the rule's "
        "own `urgent`): queue `crm_sync.urgent`, consumed before the bulk queue, the next slots "
        "of the portal's rate budget.",
    ),
    (
        "router",
        RouteAction,
        ("route.{action}",),
        "An action of a declarative rule (`routing.rules`) naming an action of its own, for an "
        "integrator's consumer; with no queue bound to it the scored answer is dead-lettered.",
    ),
    (
        "crm_sync",
        CrmWritten,
        tuple(f"crm.written.{action}" for action in BUILTIN_ACTIONS),
        "The outcome of an action, once its effect on the portal is durable.",
    ),
    (
        "survey",
        SurveyAnswered,
        ("survey.answered",),
        "An answer given on the survey page; each change of it is a new `version`.",
    ),
    (
        "crm_sync",
        CrmWritten,
        ("crm.written.survey",),
        "A survey page answer written into the portal as a smart-process item.",
    ),
    (
        "ingest",
        SaleClosed,
        ("sale.closed",),
        "A sales deal of a funnel `dispatch.sales` watches reached a success stage (or its "
        "robot asked): once per deal.",
    ),
    (
        "ingest",
        PortalEntityUpdated,
        ("portal.updated.lead", "portal.updated.task"),
        "A lead or task changed in the portal (`ONCRMLEADUPDATE`, `ONTASKUPDATE` bound to "
        "ingest's handler): its id, for the follow-up to read it at once. Nothing is stored.",
    ),
    (
        "dispatch",
        DispatchCommand,
        (
            "dispatch.nps_deal",
            "dispatch.survey_send",
            "dispatch.call_task",
            "dispatch.robot_answer",
        ),
        "A write for crm_sync on behalf of a survey request: create the NPS deal, deliver a "
        "link through the portal's robots, give the call task of an unanswered request, or "
        'answer the business process that launched the "Send NPS survey" robot '
        "(`bizproc.event.send`); also the one escalation task of an overdue follow-up "
        "(`command_id` `<follow id>:escalation:0`, `request_id` the follow-up's id).",
    ),
    (
        "app",
        RobotCalled,
        ("robot.called",),
        'The "Send NPS survey" robot called the application on a deal or an NPS item (its '
        "application token verified); the same message for a repeated call (`event_token`).",
    ),
    (
        "dispatch",
        SurveyRequested,
        ("survey.requested",),
        "Asks the survey page for a personal link under the register's request id.",
    ),
    (
        "dispatch",
        SurveyRequestChanged,
        tuple(f"dispatch.request.{state}" for state in get_args(RequestState)),
        "A request of the register changed state (for integrators; tap `dispatch.register`).",
    ),
    (
        "survey",
        SurveyReady,
        ("survey.ready",),
        "A dispatched request is stored: its personal link and opt-out link.",
    ),
    ("survey", SurveyOpened, ("survey.opened",), "A personal link was opened the first time."),
    (
        "survey",
        SurveyOptedOut,
        ("survey.opted_out",),
        "The customer asked never to be surveyed again.",
    ),
    (
        "crm_sync",
        CrmWritten,
        (
            "crm.written.nps_deal",
            "crm.written.survey_send",
            "crm.written.call_task",
            "crm.written.robot_answer",
        ),
        "The outcome of a dispatch command (`action_id` = its `command_id`).",
    ),
)

# Who consumes what: (service, queue, model, description).
CONSUMED: tuple[tuple[str, QueueSpec, type[Event], str], ...] = (
    ("ingest", INGEST_HYDRATE, WebhookReceived, "Hydrates an item or deal via crm.item.list."),
    ("scoring", SCORING_SUBMISSIONS, FormSubmitted, "Stores and scores each product answer."),
    ("router", ROUTER_SCORED, NpsScored, "Applies built-in and declarative routing rules."),
    (
        "crm_sync",
        CRM_SYNC_ACTIONS,
        RouteAction,
        "Writes to the portal: leads, tasks, contacts, deal stages.",
    ),
    ("crm_sync", CRM_SYNC_URGENT, RouteAction, "The urgent lane: consumed first."),
    (
        "crm_sync",
        CRM_SYNC_SURVEYS,
        SurveyAnswered,
        "Writes a survey page answer into the portal as a smart-process item.",
    ),
    ("ops", WRITTEN_TAP, CrmWritten, "A bounded tap of outcomes for operators to peek at."),
    ("dispatch", DISPATCH_SALES, SaleClosed, "Asks the sale's surveys (or skips, with why)."),
    ("dispatch", DISPATCH_LINKS, SurveyReady, "The link is ready: the request may be sent."),
    ("dispatch", DISPATCH_OPENS, SurveyOpened, "Marks the request opened."),
    ("dispatch", DISPATCH_OPTOUTS, SurveyOptedOut, "Records the opt-out, stops what is pending."),
    ("dispatch", DISPATCH_ANSWERS, SurveyAnswered, "Marks the request answered."),
    ("dispatch", DISPATCH_WRITTEN, CrmWritten, "Follows its commands' outcomes."),
    (
        "dispatch",
        DISPATCH_FOLLOWUP,
        CrmWritten,
        "Follows the leads and tasks crm_sync created until someone acts; records escalations.",
    ),
    (
        "dispatch",
        DISPATCH_UPDATES,
        PortalEntityUpdated,
        "Reads a followed lead or task at once (in the follow-up's next batch).",
    ),
    (
        "dispatch",
        DISPATCH_ROBOTS,
        RobotCalled,
        "Asks the robot's survey once per event_token; answers the business process.",
    ),
    (
        "crm_sync",
        CRM_SYNC_DISPATCH,
        DispatchCommand,
        "Carries out dispatch's commands once per command_id (bulk lane).",
    ),
    ("survey", SURVEY_REQUESTS, SurveyRequested, "Stores the request, answers survey.ready."),
    ("ops", REGISTER_TAP, SurveyRequestChanged, "A bounded tap of the register's changes."),
)


def _documented_broker() -> RabbitBroker:
    broker = RabbitBroker(
        "amqp://rabbitmq:5672/",
        description="RabbitMQ: topic exchange `nps`, dead letters on the direct exchange `nps.dlx`",
    )
    for service, spec, model, description in CONSUMED:
        for binding in spec.bindings:

            async def consume(event: Event) -> None:
                """Documentation only: never called."""

            # FastStream documents a subscriber's payload from its handler's annotation.
            consume.__annotations__ = {"event": model, "return": None}
            broker.subscriber(
                RabbitQueue(spec.name, routing_key=binding, declare=False),
                NPS_EXCHANGE,
                title=f"{spec.name}:{binding}",
                description=f"{service}: {description}",
            )(consume)
    for service, model, keys, description in PUBLISHED:
        for key in keys:
            broker.publisher(
                exchange=NPS_EXCHANGE,
                routing_key=key,
                persist=True,
                schema=model,
                title=key,
                description=f"{service}: {description}",
            )
    return broker


def render_document() -> str:
    """The AsyncAPI 3.0 document as committed: indented JSON with a final newline."""
    spec = AsyncAPI(
        _documented_broker(),
        title="b24-nps",
        version=version("b24-nps"),
        description=DESCRIPTION,
        schema_version="3.0.0",
    ).to_specification()
    return (
        json.dumps(json.loads(spec.to_json()), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
