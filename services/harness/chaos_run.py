"""`nps chaos`: the fault suite as one command, for operators.

The servers of `DATABASE_URL` / `RABBITMQ_URL` get a scratch database and vhost; a stack of its
own runs on them (sandbox portal with the demo data, ingest, scoring, router, crm_sync, the
survey page and dispatch, each a process), is warmed up, and answers are created, sales closed
and a campaign run in the portal while the faults are injected one after the other. Once the
pipeline settled, the verdict: lost, duplicated, resent (dispatch's documented exception),
overwritten, dlq. The portal YAML is the demo's with dispatch's send window open all day
(`portal.yaml` beside the logs). The processes stop and the scratch database and vhost are
dropped at the end, Ctrl-C included; the running pipeline's own database and vhost are never
touched.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika

from services.harness.chaos import (
    DISPATCHING,
    WARM_UP_ANSWERS,
    WARM_UP_SALES,
    DispatchLoad,
    campaign_survey,
    chaos_config,
    fault_mid_run,
    fault_stack,
    start_dispatch,
    warm_up,
)
from services.harness.scratch import scratch
from services.harness.stack import PIPELINE, running
from services.harness.verdict import Verdict
from services.ops import dlq
from shared.portal_config import load_portal_config

SERVER_RESTARTS: dict[str, str] = {
    "broker-restart": "restarts the local RabbitMQ (rabbitmqctl stop_app, start_app)",
    "db-restart": "restarts the local PostgreSQL cluster (pg_ctlcluster restart)",
}
PROGRESS_EVERY_S = 5.0
SHOWN_PER_KIND = 10


@dataclass(frozen=True)
class ChaosPlan:
    faults: tuple[str, ...]
    answers: int
    sales: int
    """Sales closed in the portal while the faults run."""
    campaign: int
    """Contacts a campaign asks while the faults run (0: no campaign)."""
    hold_s: float
    timeout_s: float
    config: Path
    log_dir: Path


def passed(verdict: Verdict) -> bool:
    """Nothing lost, duplicated or overwritten, and nothing dead-lettered (a documented resend
    is counted and shown, and does not fail the run)."""
    return verdict.ok and verdict.dlq == 0


def _every(seconds: float, say: Callable[[str], None]) -> Callable[[Verdict], None]:
    """A settle progress callback that shows the verdict line at most every `seconds`."""
    started = time.monotonic()
    shown = started - seconds

    def show(verdict: Verdict) -> None:
        nonlocal shown
        now = time.monotonic()
        if now - shown >= seconds:
            shown = now
            say(f"  {now - started:4.0f} s  {verdict.line()}")

    return show


async def run_chaos(
    plan: ChaosPlan, database_url: str, rabbitmq_url: str, say: Callable[[str], None]
) -> Verdict:
    """The whole run (see the module doc); SIGTERM cancels it like Ctrl-C. The verdict is also
    written to `verdict.json` beside the logs."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    path = chaos_config(plan.config, plan.log_dir / "portal.yaml")
    config = load_portal_config(path)
    async with scratch("chaos", database_url, rabbitmq_url) as (dsn, amqp_url):
        name = urlsplit(dsn).path.lstrip("/")
        say(f"scratch database and vhost: {name} (dropped at the end)")
        say(f"starting {', '.join(('sandbox', *PIPELINE, *DISPATCHING))} …")
        stack = fault_stack(dsn, amqp_url, path, plan.log_dir)
        async with running(stack):
            await start_dispatch(stack)
            say(f"warming up ({WARM_UP_ANSWERS} answers, {WARM_UP_SALES} sales) …")
            await warm_up(stack, config)
            campaign = (
                f", a campaign asking {plan.campaign} contacts ({campaign_survey(config)!r})"
                if plan.campaign
                else ""
            )
            say(
                f"creating {plan.answers} answers in the portal, closing {plan.sales} sales"
                f"{campaign} …"
            )
            verdict = await fault_mid_run(
                stack,
                config,
                plan.faults,
                answers=plan.answers,
                hold_s=plan.hold_s,
                timeout_s=plan.timeout_s,
                say=say,
                progress=_every(PROGRESS_EVERY_S, say),
                dispatch=DispatchLoad(
                    sales=plan.sales,
                    campaign=plan.campaign,
                    workdir=plan.log_dir,
                    over_s=max(5.0, plan.hold_s * len(plan.faults)),
                ),
            )
        if verdict.dlq:
            await _note_dead_letters(verdict, amqp_url)
    (plan.log_dir / "verdict.json").write_text(
        json.dumps(verdict.as_dict(), indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return verdict


async def _note_dead_letters(verdict: Verdict, amqp_url: str) -> None:
    """Why messages were dead-lettered, read before the scratch vhost goes."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        letters = await dlq.list_dead_letters(await connection.channel())
    for letter in letters:
        verdict.note("dlq", f"{letter.queue} {letter.message_id}: {letter.reason}")


def summary(verdict: Verdict) -> list[str]:
    """The verdict line, what went wrong (at most SHOWN_PER_KIND of each kind), and the outcome."""
    lines = [f"verdict: {verdict.line()}"]
    if verdict.register:
        states = ", ".join(f"{state} {n}" for state, n in verdict.register.items())
        lines.append(f"dispatch's register: {states}")
    for kind in ("lost", "duplicated", "resent", "overwritten", "dlq"):
        notes = verdict.details.get(kind, [])
        if notes:
            lines.append(f"{kind}:")
            lines.extend(f"  {note}" for note in notes[:SHOWN_PER_KIND])
            if len(notes) > SHOWN_PER_KIND:
                lines.append(f"  … {len(notes) - SHOWN_PER_KIND} more in verdict.json")
    if passed(verdict):
        lines.append("PASS: nothing lost, duplicated or overwritten; no dead letters")
        if verdict.resent:
            lines.append(
                f"note: {verdict.resent} e-mail(s) went twice because the SMTP server had"
                " accepted them when a fault hit dispatch before its record (the documented"
                " exception, docs/dispatch.md: One message per request)"
            )
    else:
        lines.append("FAIL: see above; each process's log is in the logs directory")
    return lines
