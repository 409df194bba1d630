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

With `portals` (N >= 2) the stack runs in application mode against N sandbox portals instead
(`portals.py`): the sandbox, the application and the pipeline (no dispatch, no survey page: the
portals get answers only); the application is installed on each portal through its install flow,
answers are created in every portal while the faults run, and the verdict is each portal's
(printed one line per portal) plus `crossed`, what landed on a portal other than the answer's.
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
from services.harness.portals import (
    PortalsVerdict,
    fault_mid_run_portals,
    install_all,
    portal_names,
    warm_up_portals,
)
from services.harness.scratch import scratch
from services.harness.stack import APP, PIPELINE, running
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
    portals: int = 0
    """Sandbox portals served in application mode (0: the webhook portal, with dispatch)."""


def passed(verdict: Verdict | PortalsVerdict) -> bool:
    """Nothing lost, duplicated, overwritten or crossed, and nothing dead-lettered (a documented
    resend is counted and shown, and does not fail the run)."""
    return verdict.ok and verdict.dlq == 0


def _every(
    seconds: float, say: Callable[[str], None]
) -> Callable[[Verdict | PortalsVerdict], None]:
    """A settle progress callback that shows the verdict line at most every `seconds`."""
    started = time.monotonic()
    shown = started - seconds

    def show(verdict: Verdict | PortalsVerdict) -> None:
        nonlocal shown
        now = time.monotonic()
        if now - shown >= seconds:
            shown = now
            say(f"  {now - started:4.0f} s  {verdict.line()}")

    return show


async def run_chaos(
    plan: ChaosPlan, database_url: str, rabbitmq_url: str, say: Callable[[str], None]
) -> Verdict | PortalsVerdict:
    """The whole run (see the module doc); SIGTERM cancels it like Ctrl-C. The verdict is also
    written to `verdict.json` beside the logs."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    path = chaos_config(plan.config, plan.log_dir / "portal.yaml")
    verdict: Verdict | PortalsVerdict
    async with scratch("chaos", database_url, rabbitmq_url) as (dsn, amqp_url):
        name = urlsplit(dsn).path.lstrip("/")
        say(f"scratch database and vhost: {name} (dropped at the end)")
        if plan.portals:
            verdict = await _run_portals(plan, path, dsn, amqp_url, say)
        else:
            verdict = await _run_webhook(plan, path, dsn, amqp_url, say)
        if verdict.dlq:
            await _note_dead_letters(verdict.note, amqp_url)
    (plan.log_dir / "verdict.json").write_text(
        json.dumps(verdict.as_dict(), indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return verdict


async def _run_portals(
    plan: ChaosPlan, path: Path, dsn: str, amqp_url: str, say: Callable[[str], None]
) -> PortalsVerdict:
    """Application mode against `plan.portals` sandbox portals (module doc)."""
    config = load_portal_config(path)
    names = portal_names(plan.portals)
    say(f"starting sandbox ({', '.join(names)}), {', '.join((APP, *PIPELINE))} (NPS_MODE=app) …")
    stack = fault_stack(dsn, amqp_url, path, plan.log_dir, portals=names)
    async with running(stack):
        installed = await install_all(stack, say)
        say(f"warming up ({WARM_UP_ANSWERS} answers in each portal) …")
        await warm_up_portals(stack, config, installed)
        say(f"creating {plan.answers} answers in each of the {len(names)} portals …")
        return await fault_mid_run_portals(
            stack,
            config,
            installed,
            plan.faults,
            answers=plan.answers,
            hold_s=plan.hold_s,
            timeout_s=plan.timeout_s,
            say=say,
            progress=_every(PROGRESS_EVERY_S, say),
        )


async def _run_webhook(
    plan: ChaosPlan, path: Path, dsn: str, amqp_url: str, say: Callable[[str], None]
) -> Verdict:
    """The webhook portal with dispatch (module doc)."""
    config = load_portal_config(path)
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
            f"creating {plan.answers} answers in the portal, closing {plan.sales} sales{campaign} …"
        )
        return await fault_mid_run(
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


async def _note_dead_letters(note: Callable[[str, str], None], amqp_url: str) -> None:
    """Why messages were dead-lettered, read before the scratch vhost goes."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        letters = await dlq.list_dead_letters(await connection.channel())
    for letter in letters:
        note("dlq", f"{letter.queue} {letter.message_id}: {letter.reason}")


def _notes(details: dict[str, list[str]], kinds: tuple[str, ...]) -> list[str]:
    """What went wrong, at most SHOWN_PER_KIND of each kind."""
    lines: list[str] = []
    for kind in kinds:
        notes = details.get(kind, [])
        if notes:
            lines.append(f"{kind}:")
            lines.extend(f"  {note}" for note in notes[:SHOWN_PER_KIND])
            if len(notes) > SHOWN_PER_KIND:
                lines.append(f"  … {len(notes) - SHOWN_PER_KIND} more in verdict.json")
    return lines


def portals_summary(verdict: PortalsVerdict) -> list[str]:
    """Each portal's line, the run's verdict line, what went wrong, and the outcome."""
    lines = [*verdict.portal_lines(), f"verdict: {verdict.line()}"]
    lines += _notes(verdict.details, ("lost", "duplicated", "overwritten", "crossed", "dlq"))
    if passed(verdict):
        lines.append(
            "PASS: in every portal nothing lost, duplicated or overwritten; nothing crossed"
            " to another portal; no dead letters"
        )
    else:
        lines.append("FAIL: see above; each process's log is in the logs directory")
    return lines


def summary(verdict: Verdict | PortalsVerdict) -> list[str]:
    """The verdict line, what went wrong (at most SHOWN_PER_KIND of each kind), and the outcome."""
    if isinstance(verdict, PortalsVerdict):
        return portals_summary(verdict)
    lines = [f"verdict: {verdict.line()}"]
    if verdict.register:
        states = ", ".join(f"{state} {n}" for state, n in verdict.register.items())
        lines.append(f"dispatch's register: {states}")
    lines += _notes(verdict.details, ("lost", "duplicated", "resent", "overwritten", "dlq"))
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
