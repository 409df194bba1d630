"""`nps survey link`: a personal survey link made by hand, so the page can be tried."""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
import typer

from services.survey.requests import DEFAULT_PORTAL, RequestError, SurveyRequest, new_request
from services.survey.settings import KeysMissingError, SurveySettings
from services.survey.store import add_request
from services.survey.tokens import LinkSigner
from shared.portal_config import ConfigError, load_portal_config
from shared.settings import get_settings
from shared.unreachable import SERVER_ERRORS, server_problem

survey_app = typer.Typer(help="The survey page: personal links.", no_args_is_help=True)


def link_path(token: str) -> str:
    return f"/s/{token}"


async def _store(dsn: str, request: SurveyRequest) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await add_request(conn, request)
    finally:
        await conn.close()


@survey_app.command("link")
def link(
    contact: Annotated[int, typer.Option("--contact", help="the Bitrix24 contact id asked")],
    segment: Annotated[
        str, typer.Option("--segment", help="a survey segment: its category id or name")
    ],
    product: Annotated[
        str | None,
        typer.Option("--product", help="the equipment product's SKU (default: the segment's)"),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="ru or en")] = "ru",
) -> None:
    """Create a survey request for a contact and print its personal link."""
    settings = get_settings()
    survey = SurveySettings()
    try:
        config = load_portal_config(settings.portal_config_path())
        keys = survey.signing_keys(settings.sandbox)
        request = new_request(
            config,
            contact_id=contact,
            segment=segment,
            product=product,
            lang=lang,
            portal=config.portal.member_id or DEFAULT_PORTAL,
        )
    except (ConfigError, KeysMissingError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except RequestError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    try:
        asyncio.run(_store(settings.database_url.get_secret_value(), request))
    except asyncpg.UndefinedTableError:
        typer.echo("the database has no survey tables yet: run `nps migrate`", err=True)
        raise typer.Exit(code=1) from None
    except SERVER_ERRORS as exc:
        typer.echo(f"cannot store the survey request: {server_problem(exc)}", err=True)
        raise typer.Exit(code=1) from None
    token = LinkSigner(keys, survey.link_max_age_s).sign(request.request_id)
    typer.echo(survey.base_url() + link_path(token))


def register(app: typer.Typer) -> None:
    app.add_typer(survey_app, name="survey")
