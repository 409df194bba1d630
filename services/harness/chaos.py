"""Fault injection against a running `Stack`, and waiting for the pipeline to settle.

Used by the fault suite (`tests/e2e/`) and `nps chaos`: a stack on a database and vhost of its
own, warmed up, answers driven from the sandbox portal while faults are injected, then the
verdict. Broker and database restarts act on the local servers (rabbitmqctl, pg_ctlcluster).

With dispatch (`start_dispatch`: the survey page and dispatch started beside the pipeline), a
`DispatchLoad` runs beside the answers while the faults are injected: sales closed in the
portal (`POST /sandbox/close-sales`) and a campaign (`nps survey campaign --csv`, as a marketer
runs it), and the verdict judges dispatch's requests, NPS deals and e-mails too
(`verdict.DispatchWatch`).

A stack in application mode (`Stack.portals`) has its answers created in every portal, the
portal faults set on every portal, and the application among the services a kill can hit; its
run and per-portal verdict are `portals.py`.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aio_pika
import asyncpg
import httpx
import yaml

from services.crm_sync.read import action_states
from services.harness.dispatch_check import RESEND_FAULTS, Incident
from services.harness.stack import APP, DISPATCH, PIPELINE, SURVEY, Stack
from services.harness.verdict import DispatchWatch, Verdict, compute
from services.ops import dlq
from shared.portal_config import PortalConfig

DISPATCHING: tuple[str, ...] = (SURVEY, DISPATCH)
"""Started after the pipeline by `start_dispatch`: the survey page (links), then dispatch."""
FAULTS: tuple[str, ...] = (
    *(f"kill:{name}" for name in (*PIPELINE, *DISPATCHING, APP)),
    "kill:all",
    "broker-restart",
    "db-restart",
    "portal-outage",
    "portal-errors",
    "ingest-down",
)
WARM_UP_ANSWERS = 5
WARM_UP_SALES = 2
LEASE_S = 10.0
"""Dispatch's lease on an e-mail send (`DISPATCH_LEASE_S`): a send a killed process started is
tried again this long after it began, within the run (one dispatch process: nothing else holds
a lease that could run out under it)."""
ALWAYS_OPEN = {"start": "00:00", "end": "23:59:59"}


class ChaosError(RuntimeError):
    """The pipeline under test did not get to the point where a fault can be judged."""


def fault_stack(
    database_url: str,
    rabbitmq_url: str,
    config: Path,
    log_dir: Path,
    portals: tuple[str, ...] = (),
) -> Stack:
    """The stack faults are injected into: the demo portal (with `portals`, those named portals
    in application mode, each seeded like the demo) without rate limits, and the catch-up sweep
    every 2 s, so answers whose events were lost come back within the run; dispatch (when
    started) takes a send a crash interrupted up again after `LEASE_S`."""
    return Stack(
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        config=config,
        log_dir=log_dir,
        sandbox_args=["--seed", "demo", "--no-limits"],
        extra_env={"SWEEP_INTERVAL_S": "2", "DISPATCH_LEASE_S": f"{LEASE_S:g}"},
        portals=portals,
    )


def chaos_config(source: Path, target: Path) -> Path:
    """The portal YAML at `source` written to `target` with dispatch's send window open all day
    (a run at night would otherwise wait for the morning); it must have a dispatch section."""
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    dispatch = data.get("dispatch") if isinstance(data, dict) else None
    if not isinstance(dispatch, dict):
        raise ChaosError(f"{source} has no dispatch section: the run judges dispatch too")
    dispatch["window"] = {**(dispatch.get("window") or {}), **ALWAYS_OPEN}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target


def services(stack: Stack) -> tuple[str, ...]:
    """The stack's services (not the sandbox) that were started, in start order."""
    return tuple(name for name in (APP, *PIPELINE, *DISPATCHING) if name in stack.procs)


async def start_dispatch(stack: Stack) -> None:
    """The survey page and dispatch started beside the running pipeline (each ready first)."""
    for name in DISPATCHING:
        await asyncio.to_thread(stack.start, name)


def runs_dispatch(stack: Stack) -> bool:
    return DISPATCH in stack.procs


def portal_urls(stack: Stack) -> list[str]:
    """Where each portal of the stack starts: the webhook portal, or each named portal."""
    if not stack.app_mode:
        return [stack.sandbox_url]
    return [stack.portal_url(name) for name in stack.portals]


async def create_answers(stack: Stack, count: int, seed: int = 7, deals: int = 0) -> list[int]:
    """Survey answers created in the sandbox portal (in each portal at once, in application
    mode, each with a seed of its own: `seed`, `seed + 1`, …) as CRM forms would (events fire),
    and `deals` NPS deals opened for won sales and answered (their update events fire)."""
    async with httpx.AsyncClient(timeout=120) as http:

        async def create(url: str, portal_seed: int) -> list[int]:
            reply = await http.post(
                f"{url}/sandbox/answers", json={"count": count, "seed": portal_seed, "deals": deals}
            )
            created: list[int] = reply.raise_for_status().json()["created"]
            return created

        urls = portal_urls(stack)
        each = await asyncio.gather(*(create(url, seed + n) for n, url in enumerate(urls)))
    return [item for items in each for item in items]


async def set_faults(stack: Stack, faults: dict[str, object]) -> None:
    """The sandbox's faults set on the portal (on every portal, in application mode)."""
    async with httpx.AsyncClient(timeout=30) as http:
        for url in portal_urls(stack):
            (await http.put(f"{url}/sandbox/faults", json=faults)).raise_for_status()


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


async def inject(
    stack: Stack, fault: str, hold_s: float = 5.0, incidents: list[Incident] | None = None
) -> None:
    """Inject `fault` into the running stack and recover from it (see FAULTS). A fault that can
    interrupt dispatch between an e-mail's acceptance and its record is added to `incidents`
    (what it was, from its start to the stack being back), so the verdict can tell that one
    documented resend from a duplicate."""
    started = time.time()
    await _inject(stack, fault, hold_s)
    if incidents is not None and fault in RESEND_FAULTS:
        incidents.append(Incident(fault, started, time.time()))


async def _inject(stack: Stack, fault: str, hold_s: float) -> None:
    kind, _, target = fault.partition(":")
    if kind == "kill":
        names = services(stack) if target == "all" else (target,)
        if target != "all" and target not in stack.procs:
            raise ChaosError(f"{fault}: the stack does not run {target}")
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


class Judged(Protocol):
    """A verdict as `settle` watches it: what is lost so far, and its line."""

    @property
    def lost(self) -> int: ...

    def line(self) -> str: ...


J = TypeVar("J", bound=Judged)
Look = Callable[[asyncpg.Pool, int], Awaitable[tuple[J, int]]]
"""One look at the pipeline (a pool on the stack's database, the dead letters): the verdict and
how many actions are still pending."""


async def settle(
    stack: Stack,
    config: PortalConfig,
    *,
    timeout_s: float = 300.0,
    progress: Callable[[Verdict], Awaitable[None] | None] | None = None,
    watch: DispatchWatch | None = None,
) -> Verdict:
    """Poll the verdict until nothing is pending and it stays the same; return it. With a
    `watch` (default: a fresh one when the stack runs dispatch), dispatch is judged too."""
    if watch is None and runs_dispatch(stack):
        watch = DispatchWatch()

    async def look(pool: asyncpg.Pool, dlq: int) -> tuple[Verdict, int]:
        verdict = await compute(stack.sandbox_url, pool, config, dlq=dlq, watch=watch)
        # Only this stack's work: a shared database may hold other runs' leftovers.
        async with pool.acquire() as conn:
            pending = (await action_states(conn, verdict.portal)).pending
        return verdict, pending

    return await settle_with(stack, look, Verdict(), timeout_s=timeout_s, progress=progress)


async def settle_with(
    stack: Stack,
    look: Look[J],
    first: J,
    *,
    timeout_s: float,
    progress: Callable[[J], Awaitable[None] | None] | None = None,
) -> J:
    """Poll `look` until nothing is lost or pending, the outbox is empty and the verdict stays
    the same three looks in a row (or `timeout_s` passed); the last verdict (`first` if none
    could be taken)."""
    deadline = time.monotonic() + timeout_s
    previous: J | None = None
    steady = 0
    verdict = first
    while time.monotonic() < deadline:
        try:
            pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
            try:
                verdict, pending = await look(pool, await dlq_total(stack.rabbitmq_url))
                outbox = await pool.fetchval(
                    "SELECT count(*) FROM outbox WHERE created_at >= $1", stack.started_at
                )
            finally:
                await pool.close()
        except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError, httpx.HTTPError):
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
    """A few answers through first: ingest has seen its portal, as in any running install; with
    dispatch, a few sales closed and their customers asked as well."""
    await create_answers(stack, WARM_UP_ANSWERS, seed=1, deals=2)
    if runs_dispatch(stack):
        await close_sales(stack, WARM_UP_SALES, seed=1)
    verdict = await settle(stack, config, timeout_s=90 if runs_dispatch(stack) else 60)
    if not verdict.ok:
        raise ChaosError(
            f"the warm-up did not come through cleanly: {verdict.line()} {verdict.details}"
        )


@dataclass(frozen=True)
class DispatchLoad:
    """Dispatch's work while the faults run: `sales` closed in the portal in rounds over
    `over_s` seconds, and a campaign asking `campaign` contacts (with an e-mail address) for
    the first sale trigger's survey, run as `nps survey campaign --csv` in `workdir`."""

    sales: int
    campaign: int
    workdir: Path
    over_s: float = 10.0
    rounds: int = 10


async def close_sales(stack: Stack, count: int, seed: int) -> list[int]:
    """`count` open sales deals moved to won in the portal (new ones opened when needed)."""
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=60) as http:
        reply = await http.post("/sandbox/close-sales", params={"count": count, "seed": seed})
        closed: list[int] = reply.raise_for_status().json()["closed"]
    return closed


async def _close_sales_over(stack: Stack, load: DispatchLoad) -> None:
    rounds = max(1, min(load.rounds, load.sales))
    pause = load.over_s / rounds
    left = load.sales
    for index in range(rounds):
        count = left // (rounds - index)
        if count:
            await close_sales(stack, count, seed=100 + index)
        left -= count
        await asyncio.sleep(pause)


async def _reachable_contacts(stack: Stack, count: int) -> list[int]:
    """`count` contacts of the portal with an e-mail address (a fixed sample)."""
    found: list[int] = []
    start: int | None = 0
    async with httpx.AsyncClient(timeout=60) as http:
        while start is not None:
            reply = await http.post(
                f"{stack.webhook_url}crm.contact.list.json",
                json={"select": ["ID", "EMAIL"], "order": {"ID": "ASC"}, "start": start},
            )
            body = reply.raise_for_status().json()
            found.extend(int(c["ID"]) for c in body["result"] if c.get("EMAIL"))
            start = body.get("next")
    if len(found) < count:
        raise ChaosError(f"the portal has {len(found)} contacts with an e-mail, not {count}")
    return sorted(random.Random(7).sample(found, count))  # noqa: S311 - a test sample


def campaign_survey(config: PortalConfig) -> str:
    """The survey a chaos campaign asks: the first sale trigger's (a deal survey: each request
    also has crm_sync create its NPS deal), else the first deal survey or segment."""
    dispatch = config.dispatch
    trigger = next((t for t in (dispatch.sales if dispatch else ()) if t.survey), None)
    if trigger is not None and trigger.survey is not None:
        return trigger.survey
    names = [s.name for s in config.deal_surveys] + [
        s.name for s in config.survey.segments if s.name
    ]
    return names[0]


async def run_campaign(
    stack: Stack, config: PortalConfig, load: DispatchLoad, attempts: int = 3
) -> None:
    """`nps survey campaign <survey> --csv … --name chaos` against the stack, as a marketer runs
    it; run again (the same name asks nobody twice) when a fault made it fail."""
    contacts = await _reachable_contacts(stack, load.campaign)
    load.workdir.mkdir(parents=True, exist_ok=True)
    csv = load.workdir / "campaign.csv"
    csv.write_text("contact_id\n" + "".join(f"{c}\n" for c in contacts), encoding="utf-8")
    args = [sys.executable, "-m", "services.cli", "survey", "campaign", campaign_survey(config)]
    args += ["--csv", str(csv), "--name", "chaos"]
    log = load.workdir / "campaign.log"
    code = -1
    for attempt in range(1, attempts + 1):
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *args, env=stack.env(DISPATCH), stdout=out, stderr=asyncio.subprocess.STDOUT
            )
            code = await process.wait()
        if code == 0:
            return
        if attempt < attempts:
            await asyncio.sleep(2.0)
    tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise ChaosError(f"the campaign failed {attempts} times (exit code {code}): {tail}")


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
    dispatch: DispatchLoad | None = None,
) -> Verdict:
    """`answers` created in the portal (and with `dispatch`, sales closed and a campaign run)
    while each fault in turn, `gap_s` after the previous one, is injected and recovered from;
    then the verdict once the pipeline settled. Every service must be ready again: database,
    broker and a live consumer on every queue it reads."""
    watch = DispatchWatch() if runs_dispatch(stack) else None
    if dispatch is not None and watch is None:
        raise ChaosError("a dispatch load needs the stack to run dispatch (start_dispatch)")
    flows: list[Coroutine[Any, Any, Any]] = [create_answers(stack, answers, deals=answers // 4)]
    if dispatch is not None:
        flows.append(_close_sales_over(stack, dispatch))
        if dispatch.campaign:
            flows.append(run_campaign(stack, config, dispatch))
    incidents = None if watch is None else watch.incidents
    await faults_while(
        stack, faults, flows, hold_s=hold_s, gap_s=gap_s, say=say, incidents=incidents
    )
    say(f"settling (at most {timeout_s:g} s) …")
    verdict = await settle(stack, config, timeout_s=timeout_s, progress=progress, watch=watch)
    await all_ready(stack)
    return verdict


async def faults_while(
    stack: Stack,
    faults: Sequence[str],
    flows: Sequence[Coroutine[Any, Any, Any]],
    *,
    hold_s: float,
    gap_s: float,
    say: Callable[[str], None],
    incidents: list[Incident] | None = None,
) -> None:
    """The `flows` (answers created, sales closed, …) run while each fault in turn, `gap_s`
    after the previous one, is injected and recovered from; returns once all are done."""
    tasks = [asyncio.ensure_future(flow) for flow in flows]
    try:
        for fault in faults:
            await asyncio.sleep(gap_s)
            say(f"{fault}: injecting (held {hold_s:g} s) …")
            await inject(stack, fault, hold_s=hold_s, incidents=incidents)
            say(f"{fault}: recovered")
        for task in tasks:
            await task
    finally:
        for task in tasks:
            task.cancel()  # done by now, unless a fault failed or the run was interrupted


async def all_ready(stack: Stack) -> None:
    """Every service of the stack ready again: database, broker and a live consumer on every
    queue it reads."""
    for name in services(stack):
        await asyncio.to_thread(stack.wait_ready, name, 30)
