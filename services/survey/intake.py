"""Requests from dispatch (docs/survey.md, Requests from dispatch): each `survey.requested`
(queue `survey.requests`) is checked against the portal YAML and stored in `survey_requests`
under its `request_id`, with its `survey.ready` (the personal link, the opt-out link, the
company's name and logo, the link's expiry) queued through the outbox in the same transaction.

A redelivery finds the request stored and changes and publishes nothing. A request the portal
YAML cannot serve (an unknown segment or deal survey, a sku that is not the segment's product)
and a request id stored already with other contents are dead-lettered with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import asyncpg

from services.survey.links import ready_event
from services.survey.page_config import PageConfig, page_for
from services.survey.requests import RequestError, SurveyRequest, requested
from services.survey.store import add_request, get_request, keep_logo
from services.survey.tokens import LinkSigner
from shared.events import SurveyRequested
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig

log = get_logger(__name__)


@dataclass(frozen=True)
class IntakeSetup:
    """What the intake needs besides the database: the YAMLs, the link signer and the public
    address links point to (`SURVEY_PUBLIC_URL`)."""

    portal: PortalConfig
    page: PageConfig
    signer: LinkSigner
    base_url: str


def _differing(stored: SurveyRequest, wanted: SurveyRequest) -> list[str]:
    """The fields in which a stored request differs from a new one (dispatch's correlation id
    aside), by name only: their values may be personal."""
    return [
        field.name
        for field in fields(SurveyRequest)
        if field.name != "correlation_id"
        and getattr(stored, field.name) != getattr(wanted, field.name)
    ]


class RequestIntake:
    """The `survey.requests` consumer's handler."""

    def __init__(self, pool: asyncpg.Pool, outbox: Outbox, setup: IntakeSetup) -> None:
        self.pool = pool
        self.outbox = outbox
        self.setup = setup
        self._kept: set[str] = set()
        """The hashes of the logos this process kept in `survey_logos` (once is enough)."""

    async def handle(self, event: SurveyRequested) -> None:
        try:
            request = requested(self.setup.portal, event)
        except RequestError as exc:
            raise PermanentError(str(exc)) from None
        link = self.setup.signer.issue(request.request_id)
        page = page_for(self.setup.page, self.setup.portal.survey_page)
        ready = ready_event(event, link, page, self.setup.base_url)
        stored: SurveyRequest | None = None
        async with self.outbox.transaction(self.pool) as conn:
            added = await add_request(conn, request)
            if added:
                if page.logo is not None and page.logo.sha256 not in self._kept:
                    await keep_logo(conn, page.logo)  # the e-mail links to it for good
                await self.outbox.enqueue(conn, [ready])
            else:
                stored = await get_request(conn, request.request_id)
        if added and page.logo is not None:
            self._kept.add(page.logo.sha256)
        if stored is not None:
            differing = _differing(stored, request)
            if differing:
                raise PermanentError(
                    f"survey.requested {request.request_id}: a request with this id is stored"
                    f" already with another {', '.join(differing)}; nothing was changed"
                )
        log.info(
            "survey_request_stored" if added else "survey_request_repeated",
            request_id=str(request.request_id),
            deal=request.deal_id is not None,
        )
