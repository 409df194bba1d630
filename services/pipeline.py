"""The processes `nps run all` starts in either mode (webhook mode: `services/cli.py`;
application mode: `services/app/plan.py`): the sandbox (when no real portal is configured),
ingest, then scoring, the router and crm_sync, each with its health port."""

from __future__ import annotations

from collections.abc import Mapping

from shared.settings import Settings
from shared.supervisor import Listener, Process

PIPELINE = ("scoring", "router", "crm_sync")
"""The services after ingest, in start order."""


def pipeline_processes(
    settings: Settings, base: list[str], env: Mapping[str, str] | None = None
) -> list[Process]:
    """Ingest and the `PIPELINE` services, started by `base` (the CLI's command line), each
    given `env` and its own health port."""
    env = dict(env or {})
    ports = {
        "scoring": settings.scoring_health_port,
        "router": settings.router_health_port,
        "crm_sync": settings.crm_sync_health_port,
    }
    processes = [
        Process(
            "ingest",
            [*base, "run", "ingest"],
            env,
            f"http://{settings.health_host}:{settings.ingest_health_port}/readyz",
            Listener(settings.ingest_host, settings.ingest_port, "INGEST_PORT"),
            also_listens=(
                Listener(settings.health_host, settings.ingest_health_port, "INGEST_HEALTH_PORT"),
            ),
        )
    ]
    for name in PIPELINE:
        port = ports[name]
        processes.append(
            Process(
                name,
                [*base, "run", name],
                {**env, "HEALTH_PORT": str(port)},
                f"http://{settings.health_host}:{port}/readyz",
                Listener(settings.health_host, port, f"{name.upper()}_HEALTH_PORT"),
            )
        )
    return processes


def sandbox_process(
    settings: Settings, base: list[str], options: list[str], ready_url: str
) -> Process:
    """The sandbox seeded like the demo on its port and its SMTP port, given the mode's own
    `options`; ready once `ready_url` answers."""
    return Process(
        "sandbox",
        [
            *base,
            "sandbox",
            "--seed",
            "demo",
            "--host",
            settings.sandbox_host,
            "--port",
            str(settings.sandbox_port),
            "--smtp-port",
            str(settings.sandbox_smtp_port),
            *options,
        ],
        {},
        ready_url,
        Listener(settings.sandbox_host, settings.sandbox_port, "SANDBOX_PORT"),
        also_listens=(
            Listener(settings.sandbox_host, settings.sandbox_smtp_port, "SANDBOX_SMTP_PORT"),
        ),
    )
