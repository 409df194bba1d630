"""A request's addresses and the events the survey page publishes about it besides its answers
(pure: no I/O): `survey.ready` for a request dispatch made, `survey.opened` the first time its
form was shown, `survey.opted_out` when the customer asked never to be asked again
(docs/survey.md, Requests from dispatch).

Each event's id is derived from what it is about, so queuing it twice would be one message.
"""

from __future__ import annotations

from datetime import datetime

from services.survey.page_config import SurveyPage
from services.survey.requests import SurveyRequest
from services.survey.tokens import IssuedLink
from shared.events import SurveyOpened, SurveyOptedOut, SurveyReady, SurveyRequested, derived_id


def link_path(token: str) -> str:
    """The form's path: `/s/<token>`."""
    return f"/s/{token}"


def optout_path(token: str) -> str:
    """The opt-out page's path: `/s/<token>/optout`."""
    return f"{link_path(token)}/optout"


def ready_event(
    cause: SurveyRequested, link: IssuedLink, page: SurveyPage, base_url: str
) -> SurveyReady:
    """`survey.ready` for the request `cause` asked for: its link, the opt-out link, the
    company's name and logo (`<base_url>/logo/<sha256>`, when its portal's page has one), the
    link's expiry."""
    base = base_url.rstrip("/")
    return SurveyReady(
        **cause.caused("survey.ready"),
        request_id=cause.request_id,
        portal=cause.portal,
        url=base + link_path(link.token),
        optout_url=base + optout_path(link.token),
        company=page.config.company.name,
        logo_url=None if page.logo is None else base + page.logo.path,
        expires_at=link.expires_at,
    )


def opened_event(request: SurveyRequest, opened_at: datetime) -> SurveyOpened:
    """`survey.opened`: the request's form was shown for the first time."""
    return SurveyOpened(
        event_id=derived_id("survey.opened", request.request_id),
        correlation_id=request.events_correlation_id,
        request_id=request.request_id,
        portal=request.portal_ref,
        opened_at=opened_at,
    )


def opted_out_event(request: SurveyRequest, opted_out_at: datetime) -> SurveyOptedOut:
    """`survey.opted_out`: the request's contact asked never to be asked again."""
    return SurveyOptedOut(
        event_id=derived_id("survey.opted_out", request.request_id),
        correlation_id=request.events_correlation_id,
        request_id=request.request_id,
        portal=request.portal_ref,
        contact_id=request.contact_id,
        opted_out_at=opted_out_at,
    )
