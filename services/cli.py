"""`nps`: the one command-line entry point (README; docs/architecture.md).

Service packages add their own commands through a `commands.py` module exposing
`register(app: typer.Typer) -> None`; this file only wires the common ones.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer

from services.pipeline import pipeline_processes, sandbox_process
from services.reports.settings import ReportsSettings
from services.survey.settings import DEMO_KEY, KeysMissingError, SurveySettings
from shared.logging import configure_logging
from shared.portal_config import PortalConfig
from shared.settings import SANDBOX_APP_TOKEN, SANDBOX_SECRET, Settings, get_settings
from shared.supervisor import (
    Listener,
    NotReadyError,
    Process,
    ProcessExitedError,
    StoppingError,
    Supervisor,
    port_problems,
)

if TYPE_CHECKING:
    from shared.bitrix24.verify import PortalCheck

SERVICES: tuple[str, ...] = (
    "ingest",
    "scoring",
    "router",
    "crm_sync",
    "survey",
    "dispatch",
    "app",
)
"""What `nps run` starts by name (`app`, the Bitrix24 application, is part of `all` in application
mode only: `services/app/plan.py`)."""
COMMAND_MODULES: tuple[str, ...] = (
    "services.sandbox.commands",
    "services.ingest.commands",
    "services.scoring.commands",
    "services.router.commands",
    "services.crm_sync.commands",
    "services.survey.commands",
    "services.ops.commands",
    "services.harness.commands",
)

app = typer.Typer(
    help="b24-nps: close the NPS feedback loop on a Bitrix24 portal.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
config_app = typer.Typer(help="Inspect and validate the portal YAML.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _runner(target: str) -> Callable[[Settings], None]:
    """`run(settings)` of a core service, or of an integrator's module given by dotted path."""
    module_name = f"services.{target}.main" if "." not in target else target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        known = ", ".join((*SERVICES, "all"))
        raise typer.BadParameter(
            f"no service or module {target!r} ({exc}); services: {known}, or a module path"
        ) from None
    run: Any = getattr(module, "run", None)
    if not callable(run):
        raise typer.BadParameter(f"module {module_name} has no run(settings) function")
    return run  # type: ignore[no-any-return]


def _plan(settings: Settings) -> list[Process]:
    """What `nps run all` starts: the sandbox portal first when no real portal is configured."""
    base = [sys.executable, "-m", "services.cli"]
    ingest_url = f"http://{settings.ingest_host}:{settings.ingest_port}"
    plan: list[Process] = []
    if settings.sandbox:
        options = [
            "--secret",
            SANDBOX_SECRET,
            "--app-token",
            SANDBOX_APP_TOKEN,
            "--handler",
            f"{ingest_url}/webhooks/bitrix24",
        ]
        ready = f"http://{settings.sandbox_host}:{settings.sandbox_port}/sandbox/info"
        plan.append(sandbox_process(settings, base, options, ready))
    plan.extend(pipeline_processes(settings, base))
    plan.extend(_surveys_and_reports(settings))
    return plan


def _surveys_and_reports(settings: Settings) -> list[Process]:
    """Dispatch, the reports app and (unless it has no key to sign links) the survey page, as
    `nps run all` starts them in either mode."""
    base = [sys.executable, "-m", "services.cli"]
    port = settings.dispatch_health_port
    # With the sandbox, dispatch's e-mails (and the digest's) go to its local inbox.
    inbox = {
        "DISPATCH_SMTP_HOST": settings.sandbox_host,
        "DISPATCH_SMTP_PORT": str(settings.sandbox_smtp_port),
        "DISPATCH_SMTP_TLS": "none",
    }
    app_sandbox = settings.nps_mode == "app" and settings.bitrix24_client_id is None
    local = app_sandbox if settings.nps_mode == "app" else settings.sandbox
    plan = [
        Process(
            "dispatch",
            [*base, "run", "dispatch"],
            {"HEALTH_PORT": str(port), **(inbox if local else {})},
            f"http://{settings.health_host}:{port}/readyz",
            Listener(settings.health_host, port, "DISPATCH_HEALTH_PORT"),
        )
    ]
    reports = ReportsSettings()
    plan.append(
        Process(
            "reports",
            [*base, "run", "reports"],
            inbox if local else {},
            f"http://{reports.host}:{reports.port}/",
            Listener(reports.host, reports.port, "REPORTS_PORT"),
            ready=f"http://{reports.host}:{reports.port}/healthz",
        )
    )
    survey = SurveySettings()
    # The sandbox's portals in application mode: their links signed with the demo key.
    keys = {"SURVEY_KEYS": DEMO_KEY} if app_sandbox and survey.keys is None else {}
    if app_sandbox or survey_page_off(settings, survey) is None:
        plan.append(
            Process(
                "survey",
                [*base, "run", "survey"],
                keys,
                f"{survey.base_url()}/healthz",
                Listener(survey.host, survey.port, "SURVEY_PORT"),
                ready=f"{survey.local_url()}/healthz",
            )
        )
    return plan


def survey_page_off(settings: Settings, survey: SurveySettings) -> str | None:
    """Why `nps run all` leaves the survey page out (None: it starts it): a real portal (or
    application mode) and no key to sign its links."""
    try:
        survey.signing_keys(settings.sandbox and settings.nps_mode == "webhook")
    except KeysMissingError as exc:
        return f"survey page not started: {exc}"
    return None


def _start_notes(settings: Settings) -> list[str]:
    """What `nps run all` says before it starts: the portal YAML used, a part left out."""
    notes = []
    config = settings.portal_config_path()
    if config != settings.nps_config:
        notes.append(f"{settings.nps_config} not found: the sandbox demo uses {config}")
    survey_off = survey_page_off(settings, SurveySettings())
    if survey_off is not None:
        notes.append(survey_off)
    return notes


def _run_all(settings: Settings) -> None:
    """Every process of the pipeline on its own, each ready before the next; Ctrl-C or SIGTERM
    stops them all together, and so does one that ends on its own (exit code 1, naming it)."""
    if settings.nps_mode == "app":
        from services.app.plan import app_plan
        from services.app.settings import AppSettings

        reports = ReportsSettings()
        frame_url = f"http://{reports.host}:{reports.port}/frame"
        chosen = app_plan(settings, AppSettings(), frame_url, _surveys_and_reports(settings))
        # A real application's survey page needs its own link keys (the sandbox's has the demo key).
        off = (
            None
            if settings.bitrix24_client_id is None
            else survey_page_off(settings, SurveySettings())
        )
        plan, notes, portals = chosen.processes, [off] if off else [], chosen.running
    else:
        plan, notes, portals = _plan(settings), _start_notes(settings), None
    problems = port_problems(plan)
    if problems:
        typer.echo("\n".join(problems), err=True)
        raise typer.Exit(code=1)
    for note in notes:
        typer.echo(note)
    supervisor = Supervisor()
    with supervisor.stopping_on_signals():
        try:
            failure = _supervise(settings, supervisor, plan, portals)
        finally:
            supervisor.stop_all()
    if failure is not None:
        typer.echo(f"{failure}; stopped the others", err=True)
        raise typer.Exit(code=1)


def _supervise(
    settings: Settings, supervisor: Supervisor, plan: list[Process], portals: list[str] | None
) -> str | None:
    """Start `plan` and watch it: None once asked to stop, else which process ended or never
    got ready. `portals`: what to say about the portals served (application mode)."""
    try:
        supervisor.start_all(plan)
    except StoppingError:
        return None
    except (ProcessExitedError, NotReadyError) as exc:
        return None if supervisor.stop_requested else f"{exc} while starting"
    typer.echo("\n".join(_running(settings, supervisor, portals)))
    exited = supervisor.watch()
    return None if exited is None or supervisor.stop_requested else str(exited)


def _running(
    settings: Settings, supervisor: Supervisor, portals: list[str] | None = None
) -> list[str]:
    """What runs where, for the person who started `nps run all`."""
    portal = (
        "sandbox portal (demo data)" if settings.sandbox else "your portal (BITRIX24_WEBHOOK_URL)"
    )
    return [
        "",
        "b24-nps is running:",
        *supervisor.where(),
        *(portals if portals is not None else [f"  portal    {portal}"]),
        f"  rabbitmq  {_safe_url(settings.rabbitmq_url.get_secret_value())}",
        f"  postgres  {_safe_url(settings.database_url.get_secret_value())}",
        "Ctrl-C stops everything.",
        "",
    ]


def _safe_url(url: str) -> str:
    """A connection URL without its password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@app.command()
def run(
    service: Annotated[
        str,
        typer.Argument(
            help="ingest, scoring, router, crm_sync, survey, dispatch, app, all, or a module"
        ),
    ],
) -> None:
    """Run one service (or `all`, each as its own process)."""
    if service == "all":
        _run_all(get_settings())
        return
    from shared.portal_config import ConfigError
    from shared.unreachable import SERVER_ERRORS, server_problem

    runner = _runner(service)
    settings = _settings()
    try:
        runner(settings)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except SERVER_ERRORS as exc:
        typer.echo(f"{service} stopped: {server_problem(exc)}", err=True)
        raise typer.Exit(code=1) from None


def _database_url_problem(dsn: str) -> str | None:
    """What makes `dsn` unusable as a PostgreSQL URL (None when it looks right)."""
    try:
        parts = urlsplit(dsn)
        _ = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in {"postgresql", "postgres"}:
        return f"scheme {parts.scheme + '://' if parts.scheme else 'missing'}"
    if not parts.path.strip("/"):
        return "no database name"
    return None


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code=code)


@app.command(name="migrate")
def migrate_command() -> None:
    """Create the database if missing, apply migrations and declare the RabbitMQ topology."""
    import aiormq
    import asyncpg

    from shared.db import migrate
    from shared.topology import declare

    settings = _settings()
    dsn = settings.database_url.get_secret_value()
    problem = _database_url_problem(dsn)
    if problem is not None:
        _fail(
            f"DATABASE_URL is not a PostgreSQL URL ({problem});"
            " expected postgresql://user[:password]@host[:port]/database",
            2,
        )
    where = _safe_url(dsn)
    try:
        applied = asyncio.run(migrate(dsn))
    except (OSError, TimeoutError) as exc:
        _fail(f"cannot reach PostgreSQL at {where} ({exc}); is it running? see DATABASE_URL")
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _fail(f"PostgreSQL at {where} refused: {exc}; see DATABASE_URL")
    typer.echo(
        f"database: {len(applied)} migration(s) applied"
        + (f" ({', '.join(applied)})" if applied else "")
    )
    amqp_url = settings.rabbitmq_url.get_secret_value()
    try:
        asyncio.run(asyncio.wait_for(declare(amqp_url), timeout=30))
    except (OSError, TimeoutError, ValueError, aiormq.exceptions.AMQPError) as exc:
        _fail(
            f"cannot declare the topology on RabbitMQ at {_safe_url(amqp_url)}"
            f" ({type(exc).__name__}: {exc or 'no answer within 30 s'}); is it running?"
            " see RABBITMQ_URL"
        )
    typer.echo("rabbitmq: topology declared")


@config_app.command("check")
def config_check(
    path: Annotated[
        Path | None, typer.Argument(help="portal YAML (default: NPS_CONFIG)", show_default=False)
    ] = None,
    portal: Annotated[
        bool,
        typer.Option(
            "--portal",
            help="also check the fields on the portal (implied when BITRIX24_WEBHOOK_URL is set;"
            " without it, the local sandbox portal is checked)",
        ),
    ] = False,
    installed: Annotated[
        str | None,
        typer.Option(
            "--installed",
            help="application mode: check this installed portal (member id or domain): its"
            " stored configuration (else the YAML) against the portal itself, with its tokens",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate the portal YAML; names every bad key and what was expected.

    With a portal, also shows the portal this deployment serves (pinned, or learned from the
    first event), checks that every configured field exists there with a fitting type, and lists
    the smart process's categories that no segment maps. With `--installed`, the same for one
    portal the application is installed on.
    """
    from shared.portal_config import ConfigError, load_portal_config, routing_summary

    settings = get_settings()
    target = path or settings.portal_config_path()
    try:
        config = load_portal_config(target)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    segments = ", ".join(f"{s.category_id} ({s.kind})" for s in config.survey.segments)
    typer.echo(f"{target}: OK — smart process {config.survey.entity_type_id}, segments {segments}")
    for line in routing_summary(config):
        typer.echo(line)
    if installed is not None:
        checked = _check_installed(settings, config, installed)
        _report_check(checked.problems, checked)
        return
    if not (portal or settings.bitrix24_webhook_url is not None):
        return
    from shared.bitrix24.verify import check_configured_portal

    problems = _show_served_portal(settings, config, target)
    checked = asyncio.run(check_configured_portal(settings, config))
    _report_check(problems + checked.problems, checked)


def _report_check(problems: list[str], checked: PortalCheck) -> None:
    """Print what checking a portal found; exit 1 when something is wrong."""
    for problem in problems:
        typer.echo(problem, err=True)
    if checked.unmapped:
        listed = ", ".join(f"{c.category_id} ({c.name})" for c in checked.unmapped)
        typer.echo(
            f"portal: categories no segment maps: {listed}; their answers are held"
            " (nps unmapped) until a segment maps them"
        )
    for funnel in checked.funnels:
        if funnel.success is not None and funnel.failure is not None:
            typer.echo(
                f"portal: deal category {funnel.category_id}: success stage"
                f" {funnel.success.id} ({funnel.success.name}), failure stage"
                f" {funnel.failure.id} ({funnel.failure.name})"
            )
    if problems:
        raise typer.Exit(code=1)
    typer.echo("portal: every configured field exists and its type fits")


def _check_installed(settings: Settings, template: PortalConfig, chosen: str) -> PortalCheck:
    """`--installed`: the installed portal `chosen` names, its stored configuration (else
    `template`) checked against it through its own client; a choice, configuration or database
    problem ends the command with one line."""
    import asyncpg

    from shared.bitrix24 import Bitrix24Error
    from shared.bitrix24.verify import PortalCheck, verify_portal
    from shared.chosen_portal import PortalChoiceError, calling_portal, portal_client
    from shared.db import create_pool
    from shared.logging import redact
    from shared.portal_config import ConfigError

    async def check() -> PortalCheck:
        pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
        try:
            async with pool.acquire() as conn:
                portal = await calling_portal(conn, settings, chosen, template)
            which = "the YAML (it has none stored)" if portal.config is template else "its stored"
            typer.echo(f"portal {portal.key} ({portal.domain}): {which} configuration")
            async with portal_client(settings, pool, portal) as client:
                try:
                    return await verify_portal(client, portal.config)
                except Bitrix24Error as exc:
                    return PortalCheck([f"portal: cannot read the field lists: {exc}"], [])
        finally:
            await pool.close()

    try:
        return asyncio.run(check())
    except PortalChoiceError as exc:
        _fail(str(exc), code=2)
    except ConfigError as exc:
        _fail(str(exc))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _fail(f"cannot read the installed portals: {redact(str(exc)) or type(exc).__name__}")


def _show_served_portal(settings: Settings, config: PortalConfig, path: Path) -> list[str]:
    """Print the portal the deployment serves; a problem line when it cannot be read."""
    import asyncpg

    from shared.logging import redact
    from shared.served_portal import describe, served_portal_at

    dsn = settings.database_url.get_secret_value()
    try:
        served = asyncio.run(served_portal_at(dsn, config))
    except asyncpg.UndefinedTableError:
        return ["served portal: the database has no ingest tables yet: run `nps migrate`"]
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return [
            f"served portal: cannot read the database: {redact(str(exc)) or type(exc).__name__}"
        ]
    typer.echo(describe(served, path))
    return []


def _register_service_commands() -> None:
    for module_name in COMMAND_MODULES:
        if module_name == "services.survey.commands":
            # `nps survey list` and `nps survey campaign` are dispatch's (the register).
            from services.dispatch.commands import register as register_dispatch
            from services.survey.commands import survey_app

            register_dispatch(survey_app)
            importlib.import_module(module_name).register(app)
        elif module_name == "services.scoring.commands":
            # `nps report --by manager` names the managers ingest read from the portal.
            from services.ingest.read import user_names

            importlib.import_module(module_name).register(app, manager_names=user_names)
        else:
            importlib.import_module(module_name).register(app)


_register_service_commands()

if __name__ == "__main__":
    app()
