"""`nps survey link`: a personal survey link made by hand, so the page can be tried: about a
smart-process segment (`--segment`) or an NPS deal (`--deal`, its deal survey from the deal's
category read from the portal, or `--survey`). In application mode it names its portal with
`--portal` (`shared/chosen_portal.py`): the request is that portal's, made with its
configuration, and the deal is read from it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

import asyncpg
import typer

from services.survey.links import link_path
from services.survey.requests import (
    DEFAULT_PORTAL,
    RequestError,
    SurveyRequest,
    new_deal_request,
    new_request,
    resolve_deal,
)
from services.survey.settings import KeysMissingError, SurveySettings
from services.survey.store import add_request
from services.survey.tokens import LinkSigner
from shared.bitrix24 import Bitrix24Error, NotFound
from shared.chosen_portal import ChosenPortal, PortalChoiceError, calling_portal, portal_client
from shared.db import create_pool
from shared.events import DEAL_ENTITY_TYPE_ID
from shared.portal_config import ConfigError, PortalConfig, load_portal_config
from shared.settings import Settings, get_settings
from shared.unreachable import SERVER_ERRORS, server_problem

survey_app = typer.Typer(help="The survey page: personal links.", no_args_is_help=True)


async def _chosen(
    dsn: str, settings: Settings, portal: str | None, template: PortalConfig
) -> ChosenPortal:
    """The portal the link is for (`shared/chosen_portal.py`): in webhook mode the one the
    deployment serves, pinned or learned from the first event."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await calling_portal(conn, settings, portal, template)
    finally:
        await conn.close()


async def _store(dsn: str, request: SurveyRequest) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await add_request(conn, request)
    finally:
        await conn.close()


class PortalReadError(Exception):
    """The deal could not be read from the portal; the message says why."""


async def _read_deal(
    settings: Settings, portal: ChosenPortal, deal_id: int
) -> Mapping[str, Any] | None:
    """The deal as `crm.item.get` reads it (None: the portal has no such deal)."""
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
    try:
        async with portal_client(settings, pool, portal) as client:
            params = {"entityTypeId": DEAL_ENTITY_TYPE_ID, "id": deal_id}
            try:
                reply = await client.call("crm.item.get", params)
            except NotFound:
                return None
            except Bitrix24Error as exc:
                raise PortalReadError(
                    f"cannot read deal {deal_id} from the portal: {exc}"
                ) from None
    finally:
        await pool.close()
    item = reply.result.get("item") if isinstance(reply.result, Mapping) else None
    return item if isinstance(item, Mapping) else None


def _deal_request(
    settings: Settings,
    portal: ChosenPortal,
    deal_id: int,
    *,
    survey: str | None,
    contact: int | None,
    lang: str,
) -> SurveyRequest:
    """The request about `deal_id`; the deal is read from the portal unless `--survey` and
    `--contact` say everything."""
    deal = None
    if survey is None or contact is None:
        deal = asyncio.run(_read_deal(settings, portal, deal_id))
    chosen, contact_id = resolve_deal(
        portal.config, deal_id, survey=survey, contact=contact, deal=deal
    )
    return new_deal_request(
        chosen,
        deal_id=deal_id,
        contact_id=contact_id,
        lang=lang,
        portal=portal.key or DEFAULT_PORTAL,
    )


def _request(
    settings: Settings,
    portal: ChosenPortal,
    *,
    contact: int | None,
    segment: str | None,
    product: str | None,
    deal: int | None,
    survey: str | None,
    lang: str,
) -> SurveyRequest:
    """The request the options describe (RequestError: they do not fit together)."""
    if (segment is None) == (deal is None):
        raise RequestError(
            "give either --segment (a smart-process survey) or --deal (a deal survey's NPS deal)"
        )
    if deal is not None:
        if product is not None:
            raise RequestError("--product belongs to --segment; a deal survey has its product")
        return _deal_request(settings, portal, deal, survey=survey, contact=contact, lang=lang)
    if survey is not None:
        raise RequestError("--survey names a deal survey: it goes with --deal")
    if contact is None:
        raise RequestError("--segment needs --contact: the Bitrix24 contact asked")
    return new_request(
        portal.config,
        contact_id=contact,
        segment=str(segment),
        product=product,
        lang=lang,
        portal=portal.key or DEFAULT_PORTAL,
    )


@survey_app.command("link")
def link(  # noqa: PLR0917 - one parameter per option, as typer reads them
    contact: Annotated[
        int | None,
        typer.Option("--contact", help="the Bitrix24 contact id asked (default: the deal's)"),
    ] = None,
    segment: Annotated[
        str | None, typer.Option("--segment", help="a survey segment: its category id or name")
    ] = None,
    product: Annotated[
        str | None,
        typer.Option("--product", help="the equipment product's SKU (default: the segment's)"),
    ] = None,
    deal: Annotated[
        int | None, typer.Option("--deal", help="the NPS deal asked about (a deal survey)")
    ] = None,
    survey_name: Annotated[
        str | None,
        typer.Option(
            "--survey",
            help="the deal survey: its name or deal category (default: the deal's category)",
        ),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="ru or en")] = "ru",
    portal: Annotated[
        str | None,
        typer.Option(
            "--portal",
            help="the portal asked (member id or domain): required in application mode; in"
            " webhook mode the portal this deployment serves",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a survey request for a contact and print its personal link."""
    settings = get_settings()
    survey = SurveySettings()
    dsn = settings.database_url.get_secret_value()
    try:
        keys = survey.signing_keys(settings.sandbox and settings.nps_mode == "webhook")
        template = load_portal_config(settings.portal_config_path())
        chosen = asyncio.run(_chosen(dsn, settings, portal, template))
        request = _request(
            settings,
            chosen,
            contact=contact,
            segment=segment,
            product=product,
            deal=deal,
            survey=survey_name,
            lang=lang,
        )
    except (ConfigError, KeysMissingError, PortalReadError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except (RequestError, PortalChoiceError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    except asyncpg.UndefinedTableError:
        typer.echo("the database is not migrated yet: run `nps migrate`", err=True)
        raise typer.Exit(code=1) from None
    except SERVER_ERRORS as exc:
        typer.echo(f"survey link not made: {server_problem(exc)}", err=True)
        raise typer.Exit(code=1) from None
    try:
        asyncio.run(_store(dsn, request))
    except asyncpg.UndefinedTableError:
        typer.echo("the database has no survey tables yet: run `nps migrate`", err=True)
        raise typer.Exit(code=1) from None
    except asyncpg.UndefinedColumnError:
        typer.echo(
            "the database's survey tables are older than this version: run `nps migrate`", err=True
        )
        raise typer.Exit(code=1) from None
    except SERVER_ERRORS as exc:
        typer.echo(f"cannot store the survey request: {server_problem(exc)}", err=True)
        raise typer.Exit(code=1) from None
    token = LinkSigner(keys, survey.link_max_age_s).sign(request.request_id)
    typer.echo(survey.base_url() + link_path(token))


def register(app: typer.Typer) -> None:
    app.add_typer(survey_app, name="survey")
