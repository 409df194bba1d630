"""Router service wiring: `nps.scored.#` (queue `router.scored`) → `route.<action>` events."""

from __future__ import annotations

from services.router.handler import RouterDeps, route_answer
from shared.events import NpsScored
from shared.messaging import subscribe
from shared.service import Runtime
from shared.service import run as run_service
from shared.settings import Settings
from shared.topology import ROUTER_SCORED


async def wire(runtime: Runtime) -> None:
    pool, broker, configs = runtime.pool, runtime.broker, runtime.configs

    async def on_scored(event: NpsScored) -> None:
        key = event.answer.portal.key
        await runtime.ensure_portal(key)
        config = configs.get(key)
        await route_answer(event, RouterDeps(pool=pool, broker=broker, config=config))

    subscribe(
        runtime.broker,
        ROUTER_SCORED,
        NpsScored,
        on_scored,
        max_attempts=runtime.settings.retry_max_attempts,
    )


def run(settings: Settings) -> None:
    """`nps run router`."""
    run_service("router", settings, wire)
