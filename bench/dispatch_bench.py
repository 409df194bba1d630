"""Dispatch's campaign at standard limits: `BENCH_CAMPAIGN` (10,000) contacts asked for a deal
survey by `nps survey campaign --csv`, against the sandbox portal over HTTP at 2 requests/s,
burst 50 (the sandbox enforces it, the product's budget keeps below it: `plan: standard`), with
a real SMTP server (aiosmtpd in this process, counting what it accepts).

Every request goes the whole way: the campaign CLI reads the contacts (`crm.contact.get`, 50 to
a request), crm_sync creates each request's NPS deal (looked up by `originId` first), the survey
page issues the personal link, and dispatch reads the contact's address and sends the e-mail,
with its timer at its shipped settings (`DISPATCH_TICK_S`, `DISPATCH_BATCH`). Meanwhile
detractor answers arrive (one every `BENCH_DISPATCH_URGENT_EVERY_S` s, as the pipeline
benchmark's part 4 sends them: an item scored low created in the sandbox, its webhook posted to
ingest): their service leads go in crm_sync's urgent lane and must not wait behind the
campaign's bulk work. A few are timed before the campaign too, for comparison.

Figures: the campaign's send rate (e-mails accepted by the SMTP server per second, from the
campaign's start and from its first e-mail), the portal's share it used (requests the sandbox
answered per second over the budget's 2, with the commands per method and the budget's lane
usage table `rate_lane_usage`), limit errors (503 `QUERY_LIMIT_EXCEEDED` and 429 operating-time;
must be 0), e-mails per request (must be 1), and webhook → service lead p50/p99 during the
campaign. Nothing is asserted. Everything runs on a scratch database and vhost (dropped at the
end); the figures are printed and written to `bench/results_dispatch.md`.

Environment: `DATABASE_URL`, `RABBITMQ_URL`; `BENCH_CAMPAIGN` (contacts, default 10000),
`BENCH_CAMPAIGN_SURVEY` (default: the example YAML's deal survey "After the sale"; a segment's
name asks without NPS deals), `BENCH_DISPATCH_URGENT_EVERY_S` (default 10; 0: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from aiosmtpd.controller import Controller

from bench.pipeline_bench import (
    DATABASE_URL,
    EXAMPLE_CONFIG,
    OPERATING_WINDOW_S,
    RABBITMQ_URL,
    STANDARD,
    BenchError,
    Detractors,
    QuietPortalStack,
    Row,
    _calls,
    _load,
    _percentile,
    _table,
    _until,
    describe_machine,
    running,
)
from services.crm_sync import read as crm_sync_read
from services.dispatch import read as dispatch_read
from services.dispatch.settings import DispatchSettings
from services.harness.chaos import chaos_config
from services.harness.dispatch_check import send_key
from services.harness.scratch import scratch
from services.harness.stack import DISPATCH, free_port
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from shared.bitrix24.budget import lane_usage
from shared.logging import configure_logging
from shared.service import run_loop


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


CAMPAIGN = _env_int("BENCH_CAMPAIGN", 10_000)
SURVEY = os.environ.get("BENCH_CAMPAIGN_SURVEY", "").strip() or "After the sale"
URGENT_EVERY_S = float(os.environ.get("BENCH_DISPATCH_URGENT_EVERY_S", "10") or "10")
BASELINE_URGENT = 5
"""Detractor answers timed before the campaign, one every 3 s (limits on, nothing else to do)."""
RESULTS = Path(__file__).resolve().parent / "results_dispatch.md"
ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("ingest", "scoring", "router", "crm_sync", "survey", DISPATCH)
TARGET_LIMIT_ERRORS = 0
TARGET_URGENT_P99_S = 5.0


def _say(text: str) -> None:
    print(text, flush=True)


# --- the SMTP server ------------------------------------------------------------------------


class SmtpSink:
    """A real SMTP server (aiosmtpd, on a thread of this process) that keeps when each message
    arrived and its Message-ID, nothing else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content: bytes = envelope.original_content or envelope.content or b""
        head = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
        message_id = next(
            (
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("message-id:")
            ),
            "",
        )
        with self._lock:
            self.accepted.append((time.time(), message_id))
        return "250 OK"

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._controller.stop()

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.accepted)


# --- the portal's contacts ------------------------------------------------------------------


async def _reachable(http: httpx.AsyncClient, webhook: str) -> list[int]:
    """The portal's contacts with an e-mail address, in id order."""
    ids: list[int] = []
    last = 0
    while True:
        reply = await http.post(
            f"{webhook}crm.contact.list",
            json={
                "order": {"ID": "ASC"},
                "filter": {">ID": last},
                "select": ["ID", "EMAIL"],
                "start": -1,
            },
        )
        page = reply.raise_for_status().json()["result"]
        if not page:
            return ids
        last = int(page[-1]["ID"])
        ids += [int(row["ID"]) for row in page if row.get("EMAIL")]


async def _seed_reachable(http: httpx.AsyncClient, webhook: str, wanted: int) -> list[int]:
    """`wanted` contacts with an e-mail address: the seeded ones and more added (limits off) with
    `batch`: `crm.item.add` (the sandbox has no `crm.contact.add`), then `crm.contact.update`
    for the address (`crm.item.*` does not write e-mails)."""
    ids = await _reachable(http, webhook)
    missing, number = wanted - len(ids), 0
    while missing > 0:
        size = min(25, missing)
        commands: dict[str, str] = {}
        for n in range(size):
            number += 1
            commands[f"a{n}"] = "crm.item.add?" + urlencode(
                {
                    "entityTypeId": CONTACT,
                    "fields[name]": "Bench",
                    "fields[lastName]": f"Customer {number}",
                }
            )
            commands[f"u{n}"] = f"crm.contact.update?id=$result[a{n}][item][id]&" + urlencode(
                {
                    "fields[EMAIL][0][VALUE]": f"bench{number}@example.com",
                    "fields[EMAIL][0][VALUE_TYPE]": "WORK",
                }
            )
        reply = await http.post(f"{webhook}batch", json={"halt": 1, "cmd": commands})
        errors = reply.raise_for_status().json()["result"].get("result_error")
        if errors:
            raise BenchError(f"adding contacts to the sandbox failed: {errors}")
        missing -= size
    return (await _reachable(http, webhook))[:wanted]


# --- the run --------------------------------------------------------------------------------


@dataclass
class Campaign:
    asked: int = 0
    cli_s: float = 0.0
    started: float = 0.0
    ended: float = 0.0
    """When the last request reached its state (Unix time)."""
    states: dict[str, int] = field(default_factory=dict)
    emails: list[tuple[float, str]] = field(default_factory=list)
    requests: int = 0
    """Requests the sandbox answered from the campaign's start to its end."""
    limit_errors: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)
    """Commands per method the portal ran during the campaign."""
    lanes: dict[str, tuple[int, float]] = field(default_factory=dict)
    baseline: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    detractors: int = 0
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def sent(self) -> int:
        return len({send_key(mid) for _, mid in self.emails})

    def rate(self) -> float:
        return len(self.emails) / self.seconds if self.seconds > 0 else 0.0

    def steady(self) -> float | None:
        """E-mails per second from the first to the last one."""
        if len(self.emails) < 2:
            return None
        span = self.emails[-1][0] - self.emails[0][0]
        return (len(self.emails) - 1) / span if span > 0 else None


async def _run_cli(stack: QuietPortalStack, csv: Path, log: Path) -> float:
    args = [sys.executable, "-m", "services.cli", "survey", "campaign", SURVEY]
    args += ["--csv", str(csv), "--name", "bench"]
    started = time.perf_counter()
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, env=stack.env(DISPATCH), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
        code = await process.wait()
    if code != 0:
        tail = (await asyncio.to_thread(log.read_text, encoding="utf-8", errors="replace"))[-1500:]
        raise BenchError(f"nps survey campaign exited with {code}: {tail}")
    return time.perf_counter() - started


async def _urgent_baseline(detractors: Detractors, pool: asyncpg.Pool) -> list[float]:
    """`BASELINE_URGENT` detractors, one every 3 s, with nothing else going on."""
    quiet = Detractors(detractors.stack, 3.0, info=detractors.info, contacts=detractors.contacts)
    stream = asyncio.create_task(quiet.run())

    async def posted() -> int:
        if stream.done():
            stream.result()
            raise BenchError("the baseline detractors' stream ended early")
        return len(quiet.posted)

    try:
        await _until(
            posted,
            lambda posted: posted >= BASELINE_URGENT,
            lambda posted: posted,
            what="the baseline detractors",
            interval_s=0.5,
        )
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream

    async def leads() -> list[Any]:
        async with pool.acquire() as conn:
            return await crm_sync_read.actions(conn, None, quiet.answer_ids())

    done = await _until(
        leads,
        lambda taken: (
            sum(a.action == "service" and a.done_at is not None for a in taken) >= len(quiet.posted)
        ),
        lambda taken: sum(a.done_at is not None for a in taken),
        what="the baseline detractors' leads",
        interval_s=0.5,
    )
    return quiet.latencies(done)


async def campaign_run(logs: Path) -> Campaign:
    result = Campaign()
    defaults = DispatchSettings(_env_file=None)
    result.settings = {
        "DISPATCH_TICK_S": f"{defaults.tick_s:g}",
        "DISPATCH_BATCH": str(defaults.batch),
    }
    async with scratch("bench_dispatch", DATABASE_URL, RABBITMQ_URL) as (dsn, amqp_url):
        config = chaos_config(EXAMPLE_CONFIG, logs / "portal.yaml")  # sends at any hour
        with SmtpSink() as sink:
            stack = QuietPortalStack(
                database_url=dsn,
                rabbitmq_url=amqp_url,
                config=config,
                log_dir=logs,
                sandbox_args=["--seed", "demo", "--no-limits"],
                extra_env={
                    "DISPATCH_SMTP_PORT": str(sink.port),
                    **result.settings,
                },
            )
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            try:
                async with (
                    running(stack, ("sandbox", *SERVICES)),
                    httpx.AsyncClient(base_url=stack.sandbox_url, timeout=120) as http,
                ):
                    info = (await http.get("/sandbox/info")).raise_for_status().json()
                    _say(f"      seeding {CAMPAIGN:,} contacts with an e-mail address …")
                    contacts = await _seed_reachable(http, stack.webhook_url, CAMPAIGN)
                    csv = logs / "campaign.csv"
                    csv.write_text(
                        "contact_id\n" + "".join(f"{c}\n" for c in contacts), encoding="utf-8"
                    )
                    detractors = Detractors(stack, URGENT_EVERY_S, info=info, contacts=contacts)
                    standard = Limits(per_second=STANDARD.per_second, burst=STANDARD.burst)
                    reply = await http.put("/sandbox/limits", json=standard.model_dump())
                    reply.raise_for_status()
                    _say(
                        f"      standard limits on; {BASELINE_URGENT} detractor answers before "
                        "the campaign (the urgent lane idle) …"
                    )
                    result.baseline = await _urgent_baseline(detractors, pool)
                    before = await _calls(http)
                    result.started = time.time()
                    stream = asyncio.create_task(detractors.run()) if URGENT_EVERY_S > 0 else None
                    _say(f"      nps survey campaign {SURVEY!r} --csv ({CAMPAIGN:,} contacts) …")
                    result.cli_s = await _run_cli(stack, csv, logs / "campaign.log")
                    portal = str(info["member_id"])
                    shown = time.monotonic()

                    async def probe() -> tuple[int, int]:
                        nonlocal shown
                        for name in ("sandbox", *SERVICES):
                            if stack.procs[name].poll() is not None:
                                raise BenchError(f"{name} exited: {stack.tail(name)}")
                        if stream is not None and stream.done():
                            stream.result()
                            raise BenchError("the detractors' stream ended early")
                        async with pool.acquire() as conn:
                            states = await dispatch_read.state_counts(conn, portal)
                        waiting = states.get("scheduled", 0)
                        total = sum(states.values())
                        mailed = len(sink.snapshot())
                        if time.monotonic() - shown >= 30:
                            shown = time.monotonic()
                            elapsed = time.time() - result.started
                            _say(
                                f"      {mailed:,}/{total:,} e-mails after {elapsed:.0f} s "
                                f"({mailed / elapsed:.1f}/s); {waiting:,} waiting; "
                                f"{len(detractors.posted)} detractors"
                            )
                        return total - waiting, total

                    await _until(
                        probe,
                        lambda state: state[1] > 0 and state[0] >= state[1],
                        lambda state: state[0],
                        what="the campaign",
                        interval_s=1.0,
                        stall_s=OPERATING_WINDOW_S + 60.0,
                    )
                    result.ended = time.time()
                    after = await _calls(http)
                    calls = (await http.get("/sandbox/calls")).json()["calls"]
                    if stream is not None:
                        stream.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await stream
                        await asyncio.sleep(URGENT_EVERY_S + 5.0)  # the last leads land
                    async with pool.acquire() as conn:
                        result.states = await dispatch_read.state_counts(conn, portal)
                        minutes = int(result.seconds // 60) + 2
                        result.lanes = await lane_usage(conn, minutes)
                        taken = await crm_sync_read.actions(conn, None, detractors.answer_ids())
                    result.during = detractors.latencies(taken)
                    result.detractors = len(detractors.posted)
            finally:
                await pool.close()
            result.emails = sorted(sink.snapshot())
    result.asked = sum(result.states.values())
    result.requests = after[0] - before[0]
    result.limit_errors = {code: n - before[1].get(code, 0) for code, n in after[1].items()}
    result.methods = dict(
        Counter(
            str(call["method"])
            for call in calls
            if call["method"] != "batch" and result.started <= call["time"] <= result.ended
        ).most_common()
    )
    return result


# --- the report -----------------------------------------------------------------------------


def _latency(values: Sequence[float]) -> str:
    if not values:
        return "none done"
    ordered = sorted(values)
    return (
        f"p50 {_percentile(ordered, 50):.2f} s · p99 {_percentile(ordered, 99):.2f} s · "
        f"max {ordered[-1]:.2f} s ({len(ordered)})"
    )


def report(run: Campaign) -> list[Row]:
    budget = STANDARD.per_second
    used = run.requests / run.seconds if run.seconds > 0 else 0.0
    steady = run.steady()
    errors = sum(run.limit_errors.values())
    copies = Counter(send_key(mid) for _, mid in run.emails)
    twice = sum(1 for n in copies.values() if n > 1)
    methods = ", ".join(f"{name} {n:,}" for name, n in list(run.methods.items())[:8])
    lanes = ", ".join(
        f"{lane} {n:,} requests (mean wait {waited / max(n, 1):.2f} s)"
        for lane, (n, waited) in sorted(run.lanes.items())
    )
    states = ", ".join(f"{state} {n:,}" for state, n in run.states.items())
    return [
        Row(
            "Campaign send rate",
            f"{run.rate():.1f} e-mails/s"
            + (f" (first to last e-mail {steady:.1f}/s)" if steady else ""),
            "—",
            f"{len(run.emails):,} e-mails accepted by the SMTP server for {run.asked:,} requests "
            f"({states}) of a campaign of {CAMPAIGN:,} contacts, survey {SURVEY!r}; "
            f"{run.seconds:.0f} s from the campaign command's start to the last request sent "
            f"(the command itself {run.cli_s:.0f} s: reading the contacts and recording the "
            f"requests); dispatch's timer at its shipped settings "
            + ", ".join(f"{k}={v}" for k, v in run.settings.items()),
        ),
        Row(
            "Portal share used",
            f"{used:.2f} of {budget:g} requests/s ({used / budget:.0%})",
            f"≤ {budget:g}/s",
            f"{run.requests:,} requests the sandbox answered during the campaign (detractors' "
            f"included); commands by method: {methods}; the budget's lanes (rate_lane_usage, "
            f"the campaign's minutes): {lanes}",
            met=used <= budget * 1.02,
        ),
        Row(
            "Limit errors",
            str(errors),
            f"{TARGET_LIMIT_ERRORS}",
            ", ".join(f"{code} {n}" for code, n in run.limit_errors.items()),
            met=errors == TARGET_LIMIT_ERRORS,
        ),
        Row(
            "E-mails per request",
            f"{len(run.emails) / max(1, len(copies)):.3f}",
            "1",
            f"{len(copies):,} distinct sends (by Message-ID: request and send number), "
            f"{twice} of them more than once",
            met=twice == 0 and len(copies) == run.states.get("sent", 0),
        ),
        Row(
            "Webhook → service lead during the campaign (urgent lane)",
            _latency(run.during),
            f"p99 ≤ {TARGET_URGENT_P99_S:.0f} s",
            f"{len(run.during)} of {run.detractors} detractor answers, one every "
            f"{URGENT_EVERY_S:g} s (BENCH_DISPATCH_URGENT_EVERY_S), from the webhook posted to "
            f"the service lead recorded; before the campaign ({BASELINE_URGENT}, limits on, "
            f"nothing else queued): {_latency(run.baseline)}",
            met=bool(run.during) and _percentile(sorted(run.during), 99) <= TARGET_URGENT_P99_S,
        ),
    ]


def write_results(machine: Sequence[tuple[str, str]], rows: Sequence[Row], load: str) -> None:
    lines = [
        "# Dispatch benchmark results",
        "",
        "Written by `python -m bench dispatch` (part of `make bench`): every figure below comes "
        "from one run on the machine described here. See the docstring of "
        "`bench/dispatch_bench.py` for how each one is measured.",
        "",
        "## Machine",
        "",
        *(f"- **{name}**: {value}" for name, value in machine),
        f"- **1-minute load average at the start**: {load} ({len(os.sched_getaffinity(0))} "
        "CPUs; anything else running on the machine lowers the figures)",
        "",
        "## Figures",
        "",
        *_table(rows),
        "",
        "## How each figure was obtained",
        "",
        *(f"- **{row.measure}**: {row.detail}" for row in rows),
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")


async def bench() -> None:
    configure_logging("warning")
    machine = await describe_machine()
    load = _load()
    _say("machine: " + "; ".join(f"{name} {value}" for name, value in machine))
    _say(
        f"campaign of {CAMPAIGN:,} contacts (BENCH_CAMPAIGN), survey {SURVEY!r}, standard limits "
        f"({STANDARD.per_second:g} req/s, burst {STANDARD.burst}); load {load} …"
    )
    logs = Path(tempfile.mkdtemp(prefix="nps-bench-dispatch-"))
    try:
        run = await campaign_run(logs)
    except Exception as exc:
        _say(f"dispatch benchmark failed: {exc}\nservice logs kept in {logs}")
        raise
    rows = report(run)
    _say("\n" + "\n".join(_table(rows)))
    for row in rows:
        _say(f"- {row.measure}: {row.detail}")
    write_results(machine, rows, load)
    _say(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    shutil.rmtree(logs, ignore_errors=True)


def main() -> None:
    run_loop(bench())


if __name__ == "__main__":
    main()
