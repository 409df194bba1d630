"""Fault injection against a running `Stack`, and waiting for the pipeline to settle.

Used by the fault suite (`tests/e2e/`) and `nps chaos`: a stack on a database and vhost of its
own, warmed up, answers driven from the sandbox portal while faults are injected, then the
verdict. Broker and database restarts act on the local servers (rabbitmqctl, pg_ctlcluster).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from services.crm_sync.read import action_states
from services.harness.stack import PIPELINE, Stack
from services.harness.verdict import Verdict, compute
from services.ops import dlq
from shared.portal_config import PortalConfig

FAULTS: tuple[str, ...] = (
    *(f"kill:{name}" for name in PIPELINE),
    "kill:all",
    "broker-restart",
    "db-restart",
    "portal-outage",
    "portal-errors",
    "ingest-down",
)
WARM_UP_ANSWERS = 5


class ChaosError(RuntimeError):
    """The pipeline under test did not get to the point where a fault can be judged."""


def fault_stack(database_url: str, rabbitmq_url: str, config: Path, log_dir: Path) -> Stack:
    """The stack faults are injected into: the demo portal without rate limits, and the catch-up
    sweep every 2 s, so answers whose events were lost come back within the run."""
    return Stack(
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        config=config,
        log_dir=log_dir,
        sandbox_args=["--seed", "demo", "--no-limits"],
        extra_env={"SWEEP_INTERVAL_S": "2"},
    )


async def create_answers(stack: Stack, count: int, seed: int = 7, deals: int = 0) -> list[int]:
    """Survey answers created in the sandbox portal as CRM forms would (events fire), and
    `deals` NPS deals opened for won sales and answered (their update events fire)."""
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=120) as http:
        reply = await http.post(
            "/sandbox/answers", json={"count": count, "seed": seed, "deals": deals}
        )
        created: list[int] = reply.raise_for_status().json()["created"]
    return created


async def set_faults(stack: Stack, faults: dict[str, object]) -> None:
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=30) as http:
        (await http.put("/sandbox/faults", json=faults)).raise_for_status()


async def dlq_total(amqp_url: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        counts = await dlq.counts(await connection.channel())
    return sum(counts.values())


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=120)  # noqa: S603


async def _to_the_end(step: Coroutine[Any, Any, None]) -> None:
    """Run `step` to its end even when the caller is cancelled (Ctrl-C): a server restart half
    done would leave the server down for everyone. The cancellation is raised afterwards."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def restart_broker(down_s: float = 3.0) -> None:
    """Stop the local RabbitMQ application (every connection drops), then start it again."""
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("broker-restart needs rabbitmqctl (a local RabbitMQ)")
    await asyncio.to_thread(_run, "rabbitmqctl", "-q", "stop_app")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(_run, "rabbitmqctl", "-q", "start_app")


def _restart_cluster() -> None:
    versions = sorted(Path("/etc/postgresql").glob("*"))
    if shutil.which("pg_ctlcluster") is None or not versions:
        raise RuntimeError("db-restart needs pg_ctlcluster (a local PostgreSQL)")
    _run("pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "restart")


async def restart_database() -> None:
    """Restart the local PostgreSQL cluster (every connection drops)."""
    await asyncio.to_thread(_restart_cluster)


async def inject(stack: Stack, fault: str, hold_s: float = 5.0) -> None:
    """Inject `fault` into the running stack and recover from it (see FAULTS)."""
    kind, _, target = fault.partition(":")
    if kind == "kill":
        names = PIPELINE if target == "all" else (target,)
        for name in names:
            await asyncio.to_thread(stack.kill, name)
        await asyncio.sleep(hold_s)
        for name in names:
            await asyncio.to_thread(stack.start, name)
    elif fault == "broker-restart":
        await _to_the_end(restart_broker(hold_s))
    elif fault == "db-restart":
        await _to_the_end(restart_database())
    elif fault == "portal-outage":
        await set_faults(stack, {"outage_s": hold_s, "outage_status": 503})
        await asyncio.sleep(hold_s)
    elif fault == "portal-errors":
        await set_faults(stack, {"error_rate": 0.2, "seed": 1})
        await asyncio.sleep(hold_s)
        await set_faults(stack, {})
    elif fault == "ingest-down":
        await asyncio.to_thread(stack.stop, "ingest")
        await create_answers(stack, 20, seed=99, deals=5)
        await asyncio.sleep(hold_s)
        await asyncio.to_thread(stack.start, "ingest")
    else:
        raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")


async def settle(
    stack: Stack,
    config: PortalConfig,
    *,
    timeout_s: float = 300.0,
    progress: Callable[[Verdict], Awaitable[None] | None] | None = None,
) -> Verdict:
    """Poll the verdict until nothing is pending and it stays the same; return it."""
    deadline = time.monotonic() + timeout_s
    previous: Verdict | None = None
    steady = 0
    verdict = Verdict()
    while time.monotonic() < deadline:
        try:
            pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
            try:
                verdict = await compute(
                    stack.sandbox_url, pool, config, dlq=await dlq_total(stack.rabbitmq_url)
                )
                # Only this stack's work: a shared database may hold other runs' leftovers.
                async with pool.acquire() as conn:
                    pending = (await action_states(conn, verdict.portal)).pending
                outbox = await pool.fetchval(
                    "SELECT count(*) FROM outbox WHERE created_at >= $1", stack.started_at
                )
            finally:
                await pool.close()
        except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError):
            await asyncio.sleep(1.0)  # a server restarting under us: look again
            continue
        if progress is not None:
            shown = progress(verdict)
            if shown is not None:
                await shown
        quiet = verdict.lost == 0 and pending == 0 and outbox == 0
        same = previous is not None and verdict.line() == previous.line()
        steady = steady + 1 if quiet and same else 0
        if steady >= 3:
            break
        previous = verdict
        await asyncio.sleep(1.0)
    return verdict


async def warm_up(stack: Stack, config: PortalConfig) -> None:
    """A few answers through first: ingest has seen its portal, as in any running install."""
    await create_answers(stack, WARM_UP_ANSWERS, seed=1, deals=2)
    verdict = await settle(stack, config, timeout_s=60)
    if not verdict.ok:
        raise ChaosError(
            f"the warm-up did not come through cleanly: {verdict.line()} {verdict.details}"
        )


async def fault_mid_run(
    stack: Stack,
    config: PortalConfig,
    faults: Sequence[str],
    *,
    answers: int,
    hold_s: float,
    timeout_s: float,
    gap_s: float = 1.0,
    say: Callable[[str], None] = lambda _text: None,
    progress: Callable[[Verdict], Awaitable[None] | None] | None = None,
) -> Verdict:
    """`answers` created in the portal while each fault in turn, `gap_s` after the previous one,
    is injected and recovered from; then the verdict once the pipeline settled. Every service
    must be ready again: database, broker and a live consumer on every queue it reads."""
    flowing = asyncio.create_task(create_answers(stack, answers, deals=answers // 4))
    try:
        for fault in faults:
            await asyncio.sleep(gap_s)
            say(f"{fault}: injecting (held {hold_s:g} s) …")
            await inject(stack, fault, hold_s=hold_s)
            say(f"{fault}: recovered")
        await flowing
    finally:
        flowing.cancel()  # done by now, unless a fault failed or the run was interrupted
    say(f"settling (at most {timeout_s:g} s) …")
    verdict = await settle(stack, config, timeout_s=timeout_s, progress=progress)
    for name in PIPELINE:
        await asyncio.to_thread(stack.wait_ready, name, 30)
    return verdict
