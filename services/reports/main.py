"""Reports app wiring: `nps run services.reports.main` serves it on REPORTS_HOST:REPORTS_PORT."""

from __future__ import annotations

import asyncio

import uvicorn

from services.reports.app import create_app
from services.reports.settings import ReportsSettings
from shared.db import migrate
from shared.logging import configure_logging, get_logger
from shared.settings import Settings

log = get_logger(__name__)


def run(settings: Settings) -> None:
    """Apply migrations, then serve the reports app until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, settings.log_format, service="reports")
    reports = ReportsSettings()
    dsn = settings.database_url.get_secret_value()
    asyncio.run(migrate(dsn))
    token = reports.token.get_secret_value() if reports.token is not None else None
    log.info("reports_serving", host=reports.host, port=reports.port, protected=token is not None)
    uvicorn.run(
        create_app(dsn, token),
        host=reports.host,
        port=reports.port,
        log_level="warning",
        access_log=False,
    )
