"""The survey process: the public page (uvicorn on SURVEY_HOST:SURVEY_PORT), the consumer of
dispatch's requests (`survey.requests`) and the outbox relay that publishes the answers, links,
opens and opt-outs, stopped together by SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from services.survey.app import PageSetup, create_app
from services.survey.intake import IntakeSetup, RequestIntake
from services.survey.page_config import load_page_config
from services.survey.settings import SurveySettings
from services.survey.tokens import LinkSigner
from shared.events import SurveyRequested
from shared.health import serve_http
from shared.messaging import subscribe
from shared.portals import PerPortal
from shared.service import Runtime, run_loop, serve
from shared.settings import Settings
from shared.topology import SURVEY_REQUESTS


def run(settings: Settings) -> None:
    """Blocking entry point of `nps run survey`."""
    run_loop(serve_survey(settings))


async def serve_survey(
    settings: Settings, stop: asyncio.Event | None = None, survey: SurveySettings | None = None
) -> None:
    """Run the survey page until `stop` is set or a signal arrives."""
    survey = survey or SurveySettings()
    # The demo key signs the webhook sandbox's links only: in application mode the portals may
    # be real ones (`make run-app` gives the sandbox's portals the demo key in SURVEY_KEYS).
    keys = survey.signing_keys(settings.sandbox and settings.nps_mode == "webhook")
    page = load_page_config(survey.page_config_path())

    async def wire(runtime: Runtime) -> None:
        signer = LinkSigner(keys, survey.link_max_age_s)
        configs = runtime.configs

        def intake_of(key: str) -> RequestIntake:
            setup = IntakeSetup(
                portal=configs.get(key), page=page, signer=signer, base_url=survey.base_url()
            )
            return RequestIntake(runtime.pool, runtime.outbox, setup)

        intakes = PerPortal(configs, intake_of)

        async def on_requested(event: SurveyRequested) -> None:
            await runtime.ensure_portal(event.portal.key)
            await intakes.get(event.portal.key).handle(event)

        subscribe(
            runtime.broker,
            SURVEY_REQUESTS,
            SurveyRequested,
            on_requested,
            max_attempts=runtime.settings.retry_max_attempts,
        )
        # A link's page asks what its request's portal's configuration says (application mode:
        # the portals served; webhook mode: the one portal YAML).
        setup = PageSetup(
            portal=configs if runtime.portals is not None else configs.only(),
            page=page,
            signer=signer,
            secure=survey.base_url().startswith("https://"),
            rate_per_minute=survey.rate_per_minute,
        )
        app = create_app(runtime.pool, runtime.outbox, setup)

        async def http(stop: asyncio.Event) -> None:
            await serve_http(app, survey.host, survey.port, stop)

        runtime.background.append(http)

    await serve("survey", settings, wire, stop=stop)
