"""Reports app wiring: `nps run reports` serves the dashboard and `/api/report` on
REPORTS_HOST:REPORTS_PORT, and sends the weekly digest when the portal YAML has
`dispatch.digest` (`digest_job.py`; in application mode each installed portal's own, when its
stored configuration has one).

It is never open: without `REPORTS_TOKEN` a random token is generated at start-up and printed
once on stdout (never into the logs), with the address that lets a browser in.
"""

from __future__ import annotations

import asyncio
import secrets
import sys

import uvicorn

from services.reports.app import create_app
from services.reports.digest_job import DigestJob, installed_digests, run_digest
from services.reports.settings import ReportsSettings
from shared.bitrix24.tokens import AppCredentials
from shared.db import create_pool, migrate
from shared.dispatch_config import Dispatch
from shared.logging import configure_logging, get_logger
from shared.portal_config import contact_field_titles, load_portal_config
from shared.served_portal import pinned_member_id
from shared.settings import Settings
from shared.smtp import SmtpMailer, SmtpSettings

log = get_logger(__name__)

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names them, binds nothing


def resolve_token(reports: ReportsSettings) -> tuple[str, bool]:
    """The token to require: REPORTS_TOKEN, or a fresh random one (then `True`)."""
    if reports.token is not None:
        return reports.token.get_secret_value(), False
    return secrets.token_urlsafe(24), True


def dashboard_url(reports: ReportsSettings) -> str:
    """Where a browser on this machine reaches the dashboard."""
    host = "127.0.0.1" if reports.host in WILDCARD_HOSTS else reports.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{reports.port}/"


def generated_token_notice(url: str, token: str) -> str:
    return (
        "REPORTS_TOKEN is not set: the reports app generated a token for this run.\n"
        f"  open {url}?token={token} once in a browser (it sets a cookie), or\n"
        f'  curl -H "Authorization: Bearer {token}" "{url}api/report?by=product"\n'
        "Set REPORTS_TOKEN to keep the same token across restarts.\n"
    )


def portal_display(
    settings: Settings,
) -> tuple[str, dict[str, str], dict[str, tuple[str, ...]]]:
    """The portal's time zone, its contact fields' titles and its comment themes, from the portal
    YAML when there is one (UTC, no titles, no themes without it: the dashboard needs no YAML to
    run)."""
    path = settings.portal_config_path()
    if not path.exists():
        return "UTC", {}, {}
    config = load_portal_config(path)
    return config.portal.timezone, contact_field_titles(config), config.theme_words()


def portal_dispatch(settings: Settings) -> Dispatch:
    """Dispatch's settings of the portal YAML (its defaults without the file or the section):
    the "Asked" page tells the next reminders and the call tasks by them."""
    path = settings.portal_config_path()
    config = load_portal_config(path) if path.exists() else None
    return (config.dispatch if config else None) or Dispatch()


def template_yaml(settings: Settings) -> str | None:
    """The deployment's portal YAML as text: the settings page inside a portal shows it while
    the portal has no configuration of its own; None without the file."""
    path = settings.portal_config_path()
    return path.read_text(encoding="utf-8") if path.exists() else None


def run(settings: Settings) -> None:
    """Apply migrations, then serve the reports app until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, settings.log_format, service="reports")
    reports = ReportsSettings()
    timezone, field_titles, themes = portal_display(settings)
    dsn = settings.database_url.get_secret_value()
    asyncio.run(migrate(dsn))
    token, generated = resolve_token(reports)
    url = dashboard_url(reports)
    if generated:
        sys.stdout.write(generated_token_notice(url, token))
        sys.stdout.flush()
    log.info("reports_serving", url=url, generated_credentials=generated)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(
                dsn,
                token,
                portal_url=settings.portal_webhook_url(),
                rabbitmq_url=settings.rabbitmq_url.get_secret_value(),
                min_answers=settings.nps_min_answers,
                timezone=timezone,
                field_titles=field_titles,
                themes=themes,
                dispatch=portal_dispatch(settings),
                pinned_portal=pinned_member_id(settings.portal_config_path()),
                frame_secret=(
                    reports.frame_secret.get_secret_value() if reports.frame_secret else None
                ),
                template_yaml=template_yaml(settings),
                public_url=reports.public(),
                app_credentials=(
                    AppCredentials.from_settings(settings)
                    if settings.bitrix24_client_id and settings.bitrix24_client_secret
                    else None
                ),
            ),
            host=reports.host,
            port=reports.port,
            log_level="warning",
            access_log=False,
            log_config=None,  # uvicorn's lines go through our logging set-up (JSON)
        )
    )
    asyncio.run(serve_with_digest(server, settings, dsn))


async def serve_with_digest(server: uvicorn.Server, settings: Settings, dsn: str) -> None:
    """Serve the app; alongside, the weekly digest's timer when the portal YAML asks for one
    (`dispatch.digest`, docs/dashboard.md), or in application mode for the installed portals
    whose own configuration asks for one."""
    path = settings.portal_config_path()
    config = load_portal_config(path) if path.exists() else None
    digest = None if config is None or config.dispatch is None else config.dispatch.digest
    min_answers = settings.nps_min_answers
    if settings.nps_mode == "app":
        pool = await create_pool(dsn, max_size=2)
        mailer = SmtpMailer(SmtpSettings())

        async def jobs() -> list[DigestJob]:
            return await installed_digests(pool, mailer, min_answers=min_answers)

        log.info("digest_scheduled", portals="installed")
    elif config is not None and digest is not None:
        pool = await create_pool(dsn, max_size=2)
        job = DigestJob(pool, config, SmtpMailer(SmtpSettings()), min_answers=min_answers)

        async def jobs() -> list[DigestJob]:
            return [job]

        log.info("digest_scheduled", weekday=digest.weekday)
    else:
        await server.serve()
        return
    stop = asyncio.Event()
    timer = asyncio.create_task(run_digest(jobs, stop))
    try:
        await server.serve()
    finally:
        stop.set()
        await timer
        await pool.close()
