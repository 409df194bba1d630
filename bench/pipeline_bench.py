"""The whole pipeline measured in one run on this machine, next to the raw broker ceiling.

1. **Raw ceiling**: `bench.raw_bench.measure()`, plain aio-pika moving persistent, confirmed
   messages through four hops, all in this one Python process; its CPU and RabbitMQ's per
   message are printed with it.
2. **End to end, limits off**: survey answers created in the sandbox portal
   (`POST /sandbox/answers`, not timed), then their `ONCRMDYNAMICITEMADD` webhooks posted to
   ingest by the bench (16 in flight, as fast as ingest answers), through hydrator → scoring →
   router → crm_sync until every resulting CRM action is done. The portal has no event handler
   registered: its own sender opens a new HTTP client per event (~20 ms of CPU each), which on
   two CPUs would measure the sandbox, not b24-nps. The sandbox runs without limits and the
   portal YAML is `plan: custom` without a rate (no client-side budget either). Events/s =
   webhooks / time from the first webhook posted to the last CRM action done (or answer
   scored), and its ratio to the raw ceiling. The CPU every process used per webhook is
   printed, with what it means on more CPUs: once every process has a core of its own, each
   side is bound by its busiest single process (the raw ceiling by its one client process).
3. **Ingest latency**: an open-loop load generator posting `ONCRMDYNAMICITEMUPDATE` events for
   the items of (2), each with its own `ts` so every one is accepted and stored, at a fixed
   200 webhooks/s over 64 keep-alive connections (a lean client: httpx would cost the generator
   more CPU than ingest); latency is measured from each request's scheduled send time, so a
   stall counts in full (no coordinated omission). Scoring, router and crm_sync are stopped
   first (their queues fill): on two CPUs they would otherwise measure the machine's other work.
4. **Backlog drain, standard limits**: `route.contact` actions, round-robin over the portal's
   contacts (more added while limits are off), published straight to the `nps` exchange while
   crm_sync is stopped; then the sandbox set to 2 requests/s, burst 50, the burst spent through
   the shared budget (and kept spent until crm_sync is ready), and crm_sync started. Patches/s
   from the first action begun to the last done; the crm_sync process's peak RSS (`VmHWM`) over
   its RSS when it came up. In the same run, with ingest, scoring and router up as well,
   detractor answers arrive at a steady rate while the backlog drains (one every
   `BENCH_DETRACTOR_EVERY_S` seconds: a Laser A item scored 2 created in the sandbox, its
   `ONCRMDYNAMICITEMADD` webhook posted to ingest): webhook → service lead created, from the
   webhook posted to the service action done, p50 and p99. The service lead and the head of
   sales' task go in crm_sync's urgent lane; the contact patches in the bulk lane.

Each part runs on a scratch PostgreSQL database and a scratch RabbitMQ vhost (created here and
dropped at the end), so a `make run` in progress is never touched. Nothing is asserted; a part
that fails is reported as failed with the reason and the others still run. The figures are
printed as a table and written to `bench/results.md` with a description of the machine.

Environment: `DATABASE_URL`, `RABBITMQ_URL` (the servers), `BENCH_PIPELINE_ANSWERS` (answers
for part 2, default 2000), `BENCH_LATENCY_S` (part 3's duration, default 10),
`BENCH_BACKLOG` (patches for part 4, default 100000; 0 skips it), `BENCH_BACKLOG_CONTACTS`
(contacts the backlog is spread over, default 10000, at most one per patch),
`BENCH_DETRACTOR_EVERY_S` (seconds between two detractor answers during part 4, default 30; 0:
none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import aio_pika
import asyncpg
import httpx
import yaml

from bench.raw_bench import HOPS
from bench.raw_bench import MESSAGES as RAW_MESSAGES
from bench.raw_bench import measure as raw_measure
from services.crm_sync import read as crm_sync_read
from services.harness.scratch import ScratchError, scratch, with_path
from services.harness.stack import PIPELINE, Stack
from services.router import read as router_read
from services.sandbox.events import event_body
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.scoring import read as scoring_read
from shared.bitrix24 import Bitrix24Client, PgRateBudget, portal_key
from shared.events import PortalRef, RouteAction, ScoredAnswer
from shared.logging import configure_logging
from shared.portal_config import EquipmentSegment, Rate, load_portal_config
from shared.service import run_loop
from shared.settings import SANDBOX_APP_TOKEN, SANDBOX_USER_ID
from shared.topology import CORE_QUEUES, CRM_SYNC_ACTIONS, EXCHANGE

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "config" / "portal.example.yaml"
RESULTS = Path(__file__).resolve().parent / "results.md"
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/nps")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")

E2E_ANSWERS = _env_int("BENCH_PIPELINE_ANSWERS", 2000)
E2E_CONCURRENCY = 16
"""Webhooks in flight at once in part 2 (a closed loop: as fast as ingest answers)."""
LATENCY_RATE = 200.0
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_S", "10") or "10")
LATENCY_WARMUP = 50
LATENCY_CONNECTIONS = 64
DOWNSTREAM = ("scoring", "router", "crm_sync")
"""Stopped for part 3: their queues fill while ingest is measured on its own."""
BACKLOG = _env_int("BENCH_BACKLOG", 100_000)
MEASURED_SERVICES = frozenset({"ingest", "scoring", "router", "crm_sync"})
BACKLOG_CONTACTS = _env_int("BENCH_BACKLOG_CONTACTS", 10_000)
DETRACTOR_EVERY_S = float(os.environ.get("BENCH_DETRACTOR_EVERY_S", "30") or "30")
"""Seconds between two detractor answers during the drain. Each costs the drain about two
requests (ingest's read of the item, crm_sync's request with the lead and the task), about 100
patches: one every 30 s takes some 3 patches/s off the drain, one every 10 s some 10."""
DETRACTOR_SCORE = 2
DETRACTOR_SEGMENT = 12  # Laser A in the example YAML: its score field is a number
STANDARD = Rate(per_second=2.0, burst=50)
STALL_S = 180.0
"""A part gives up when its progress counters have not moved for this long."""
OPERATING_WINDOW_S = 600.0
"""The portal's operating-time window: how long a method can stay parked after a 429."""

TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
TARGET_DRAIN = 95.0
TARGET_DRAIN_WITH_URGENT = 90.0
TARGET_URGENT_P99_S = 5.0
TARGET_RSS_MB = 50.0


class BenchError(RuntimeError):
    """A part could not be measured; the message says why."""


@dataclass
class Row:
    measure: str
    result: str
    target: str
    detail: str
    met: bool | None = None
    """Whether the figure reaches its target (None: no target, or no figure)."""


@dataclass
class Run:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loads: dict[str, str] = field(default_factory=dict)
    """The 1-minute load average as each part began (other work on the machine shows here)."""
    failed: bool = False


# --- helpers ---------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def _scratch(label: str) -> contextlib.AbstractAsyncContextManager[tuple[str, str]]:
    """A fresh database and vhost on the configured servers for one part, dropped after it."""
    return scratch(f"bench_{label}", DATABASE_URL, RABBITMQ_URL)


@contextlib.asynccontextmanager
async def running(stack: Stack, names: Sequence[str]) -> AsyncIterator[Stack]:
    """`names` started in order (each waited for until ready); everything stopped at the end."""
    try:
        for name in names:
            await asyncio.to_thread(stack.start, name)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)


def _percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def _queue_depths(amqp_url: str, names: Sequence[str]) -> dict[str, int]:
    """Ready messages per queue (passive declares: nothing is created)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = int(queue.declaration_result.message_count or 0)
    return depths


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes (/proc/<pid>/status)."""
    values: dict[str, int] = {}
    with Path(f"/proc/{pid}/status").open(encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


async def _until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    progress: Callable[[T], object],
    *,
    what: str,
    interval_s: float,
    stall_s: float = STALL_S,
) -> T:
    """Poll `probe` until `done`; fail once `progress` has not changed for `stall_s`."""
    last_progress: object = None
    moved = time.monotonic()
    while True:
        state = await probe()
        if done(state):
            return state
        marker = progress(state)
        if marker != last_progress:
            last_progress, moved = marker, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise BenchError(f"{what}: no progress for {stall_s:.0f} s (last state {state})")
        await asyncio.sleep(interval_s)


# --- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


async def _postgres_version() -> str:
    try:
        conn = await asyncpg.connect(with_path(DATABASE_URL, "/postgres"))
    except (OSError, asyncpg.PostgresError) as exc:
        return f"unreachable ({type(exc).__name__})"
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _rabbitmq_version() -> str:
    try:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
        return f"unreachable ({type(exc).__name__})"
    async with connection:
        transport = connection.transport
        properties = transport.connection.server_properties if transport is not None else {}
        version = properties.get("version", "unknown")
    return version.decode() if isinstance(version, bytes) else str(version)


async def describe_machine() -> list[tuple[str, str]]:
    return [
        ("Date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        (
            "CPU",
            f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()} ({_cpu_model()}, "
            f"{platform.machine()})",
        ),
        ("Memory", _memory_gib()),
        ("OS", platform.platform(terse=True)),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("PostgreSQL", await _postgres_version()),
        ("RabbitMQ", await _rabbitmq_version()),
    ]


# --- 1. the raw ceiling ----------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    rate: float
    """Messages per second through the four hops."""
    client_ms: float
    """CPU ms per message of the one Python process moving them."""
    broker_ms: float
    """RabbitMQ's CPU ms per message."""

    @property
    def per_core(self) -> float:
        """Messages/s the client process could move on a core of its own."""
        return 1000 / self.client_ms


async def part_raw(run: Run) -> Raw | None:
    run.loads["1"] = _load()
    measure = "Raw ceiling (aio-pika, 4 hops, persistent + confirmed)"
    _say(
        f"\n[1/4] raw ceiling: aio-pika, {HOPS} hops, {RAW_MESSAGES} persistent messages "
        f"(load {run.loads['1']}) …"
    )
    client, broker = time.process_time(), _server_cpu()["RabbitMQ"]
    try:
        rate = await raw_measure()
    except Exception as exc:
        _failed(run, measure, exc)
        return None
    client = (time.process_time() - client) * 1000 / RAW_MESSAGES
    raw = Raw(rate, client, (_server_cpu()["RabbitMQ"] - broker) * 1000 / RAW_MESSAGES)
    cpu = f"CPU ms per message: the Python client {raw.client_ms:.2f}, RabbitMQ {raw.broker_ms:.2f}"
    _say(f"      {rate:,.0f} msg/s; {cpu}")
    run.rows.append(
        Row(measure, f"{rate:,.0f} msg/s", "—", f"{RAW_MESSAGES} messages, quorum queues; {cpu}")
    )
    return raw


def _failed(run: Run, measure: str, exc: BaseException) -> None:
    reason = str(exc) or type(exc).__name__
    if not isinstance(exc, BenchError | ScratchError):
        reason = f"{type(exc).__name__}: {reason}"
    _say(f"      FAILED: {reason}")
    run.failed = True
    run.rows.append(Row(measure, "failed", "—", reason.splitlines()[0][:300]))


# --- 2. end to end ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    scored: int
    routed: int
    done: int
    pending: int
    outbox: int
    queued: int
    dead: int

    def line(self) -> str:
        return (
            f"scored {self.scored} · actions routed {self.routed}, done {self.done}, pending "
            f"{self.pending} · outbox {self.outbox} · queued {self.queued} · dlq {self.dead}"
        )


_UNPUBLISHED_SQL = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


@dataclass(frozen=True)
class EndToEnd:
    items: int
    seconds: float
    accept_s: float
    answers: int
    actions: dict[str, int]
    refused: dict[str, int]
    cpu: dict[str, float]
    item_ids: list[int]
    info: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.items / self.seconds


@dataclass
class QuietPortalStack(Stack):
    """The stack with a sandbox portal that sends no events (no handler registered): the bench
    posts the webhooks itself through one pooled client, so the portal's own per-event HTTP
    client (a new one for every event) does not compete for these CPUs."""

    def args(self, name: str) -> list[str]:
        args = super().args(name)
        if name == "sandbox" and "--handler" in args:
            at = args.index("--handler")
            del args[at : at + 2]
        return args


@dataclass(frozen=True)
class Events:
    """Bitrix24 event bodies for the sandbox portal's NPS items, as the portal itself sends them."""

    info: dict[str, Any]

    def body(self, event: str, item_id: int, ts: int) -> str:
        return event_body(
            event=event,
            handler_id=1,
            entity_type_id=int(self.info["smart_processes"][0]),
            item_id=item_id,
            ts=ts,
            domain=str(self.info["domain"]),
            member_id=str(self.info["member_id"]),
            application_token=SANDBOX_APP_TOKEN,
        )


def _unlimited_config(directory: Path) -> Path:
    """The example portal YAML with `plan: custom` and no rate: no client-side budget."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["portal"] = {"plan": "custom", "member_id": None}
    path = directory / "portal.unlimited.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    load_portal_config(path)  # fails here, clearly, if the example YAML changed shape
    return path


async def _flow(pool: asyncpg.Pool, portal: str, amqp_url: str) -> Flow:
    async with pool.acquire() as conn:
        scored = len(await scoring_read.scored_items(conn, portal))
        routed = await router_read.sent_actions(conn, None)
        states = await crm_sync_read.action_states(conn, None)
        outbox = int(await conn.fetchval(_UNPUBLISHED_SQL))
    # The queues of the four services measured here (dispatch's and the survey page's fill
    # with outcomes nobody runs to consume in this benchmark).
    work = [spec for spec in CORE_QUEUES if spec.name.split(".")[0] in MEASURED_SERVICES]
    depths = await _queue_depths(
        amqp_url, [name for spec in work for name in (spec.name, spec.dlq)]
    )
    queued = sum(depths[spec.name] for spec in work)
    dead = sum(depths[spec.dlq] for spec in work)
    return Flow(scored, routed, states.done, states.pending, outbox, queued, dead)


async def _post_all(ingest_url: str, bodies: Sequence[str], concurrency: int) -> Counter[str]:
    """Post every body to ingest, `concurrency` at a time, as fast as it answers."""
    outcomes: Counter[str] = Counter()
    pending = iter(bodies)
    async with KeepAlive(ingest_url, concurrency) as http:

        async def worker() -> None:
            for body in pending:
                outcomes[await _post(http, body)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


class KeepAlive:
    """The bench's HTTP/1.1 client for webhooks: a fixed set of keep-alive connections, one
    request at a time on each, requests beyond that waiting for a free connection. A tenth of
    httpx's CPU per request, so that on two CPUs the figures measure ingest, not the generator.
    Enough for uvicorn's replies (a status line, headers with Content-Length, a body)."""

    def __init__(self, url: str, connections: int) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._size = connections
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._all: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> KeepAlive:
        for _ in range(self._size):
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._all.append(writer)
            self._idle.put_nowait((reader, writer))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for writer in self._all:
            writer.close()

    async def post_form(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST `body` (form-encoded) to `path`: (status, response body)."""
        reader, writer = await self._idle.get()
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *headers = head.decode("latin-1").split("\r\n")
            length = next(
                int(value)
                for name, _, value in (line.partition(":") for line in headers)
                if name.strip().lower() == "content-length"
            )
            reply = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.put_nowait((reader, writer))
        return int(status_line.split()[1]), reply


async def _post(http: KeepAlive, body: str) -> str:
    """One webhook; its outcome: ingest's `status` (accepted, duplicate…) or the failure."""
    try:
        status, reply = await http.post_form("/webhooks/bitrix24", body.encode())
    except (OSError, asyncio.IncompleteReadError) as exc:
        return type(exc).__name__
    outcome = json.loads(reply).get("status") if 200 <= status < 300 else None
    return str(outcome or f"HTTP {status}")


def _stat_cpu(stat: str) -> float:
    """User + system CPU seconds in the text of a /proc/<pid>/stat file."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    return _stat_cpu(Path(f"/proc/{pid}/stat").read_text(encoding="ascii"))


SERVERS = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ"}
"""Command names of the local servers' processes and how the figures name them."""


def _server_cpu() -> dict[str, float]:
    """CPU seconds the local PostgreSQL and RabbitMQ processes have used (0 when they run
    elsewhere). A connection's backend that ends within a measured window takes its share
    along, so differences of these sums are lower bounds."""
    used = dict.fromkeys(SERVERS.values(), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text(encoding="ascii", errors="replace")
            name = SERVERS.get(text[text.index("(") + 1 : text.rindex(")")])
            if name is not None:
                used[name] += _stat_cpu(text)
    return used


def _stack_cpu(stack: Stack) -> dict[str, float]:
    used = {name: _cpu_seconds(proc.pid) for name, proc in stack.procs.items()}
    used["bench"] = time.process_time()
    return {**used, **_server_cpu()}


def _cpu_line(cpu: dict[str, float], events: int) -> str:
    """CPU milliseconds per event, per process and in all."""
    each = ", ".join(f"{name} {seconds * 1000 / events:.1f}" for name, seconds in cpu.items())
    return f"{each}; {sum(cpu.values()) * 1000 / events:.1f} in all"


def _cpu_cap(cpu: dict[str, float], events: int) -> float:
    """Events/s this machine's CPUs could carry at the measured CPU cost per event."""
    return len(os.sched_getaffinity(0)) * events / sum(cpu.values())


def _load() -> str:
    """The 1-minute load average: other work on the machine shows here."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text(encoding="ascii").split()[0]
    return "n/a"


async def end_to_end(stack: Stack, dsn: str, amqp_url: str, count: int) -> EndToEnd:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=300) as http:
            info: dict[str, Any] = (await http.get("/sandbox/info")).raise_for_status().json()
            reply = await http.post("/sandbox/answers", json={"count": count, "seed": 8})
            created: list[int] = reply.raise_for_status().json()["created"]
        portal = str(info["member_id"])
        now = int(time.time())
        events = Events(info)
        bodies = [events.body("ONCRMDYNAMICITEMADD", item, now) for item in created]
        cpu_before = _stack_cpu(stack)
        started = float(await pool.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
        posting = time.perf_counter()
        outcomes = await _post_all(stack.ingest_url, bodies, E2E_CONCURRENCY)
        accept_s = time.perf_counter() - posting
        refused = {name: n for name, n in outcomes.items() if name != "accepted"}
        accepted = outcomes["accepted"]
        quiet: list[Flow] = []

        def settled(flow: Flow) -> bool:
            calm = (
                flow.scored + flow.dead >= accepted
                and flow.pending == 0
                and flow.outbox == 0
                and flow.queued == 0
                and flow.routed == flow.done
            )
            quiet[:] = [*quiet[-1:], flow] if calm else []
            return len(quiet) == 2 and quiet[0] == quiet[1]

        flow = await _until(
            lambda: _flow(pool, portal, amqp_url),
            settled,
            lambda f: (f.scored, f.done, f.outbox, f.queued),
            what="end to end",
            interval_s=0.25,
            stall_s=60.0,
        )
        cpu_after = _stack_cpu(stack)
        if flow.dead:
            raise BenchError(f"{flow.dead} message(s) dead-lettered; see {stack.log_dir}")
        async with pool.acquire() as conn:
            taken = await crm_sync_read.actions(conn, None)
            last_scored = await scoring_read.last_scored_at(conn, None)
            answers = len(await scoring_read.answer_ids(conn, portal))
        finished = max(
            at.timestamp() for at in (*(a.done_at for a in taken), last_scored) if at is not None
        )
        actions = dict(sorted(Counter(a.action for a in taken).items()))
    finally:
        await pool.close()
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    return EndToEnd(
        accepted, finished - started, accept_s, answers, actions, refused, cpu, created, info
    )


# --- 3. ingest latency -----------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    sent: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    outcomes: dict[str, int]
    late_ms: float
    """The generator's own worst lag behind schedule (its share of the CPUs)."""
    ingest_cpu: float
    bench_cpu: float
    """CPU used during the window, in cores (1.0 = one core busy all the time)."""


async def ingest_latency(stack: Stack, e2e: EndToEnd) -> Latency:
    events = Events(e2e.info)
    ids = e2e.item_ids
    first_ts = int(time.time()) - 100_000  # one ts per request: every event is a new one
    total = int(LATENCY_RATE * LATENCY_SECONDS)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    late = 0.0
    async with KeepAlive(stack.ingest_url, LATENCY_CONNECTIONS) as http:

        async def send(seq: int, scheduled: float | None) -> None:
            body = events.body("ONCRMDYNAMICITEMUPDATE", ids[seq % len(ids)], first_ts + seq)
            outcome = await _post(http, body)
            if scheduled is not None:
                latencies.append(time.perf_counter() - scheduled)
                outcomes[outcome] += 1

        # Warm-up (not counted): connections opened, code paths hot, then a pause.
        await asyncio.gather(*(send(total + seq, None) for seq in range(LATENCY_WARMUP)))
        await asyncio.sleep(2.0)
        pid = stack.procs["ingest"].pid
        ingest_before, bench_before = _cpu_seconds(pid), time.process_time()
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        for seq in range(total):
            scheduled = start + seq / LATENCY_RATE
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            late = max(late, time.perf_counter() - scheduled)
            tasks.append(asyncio.create_task(send(seq, scheduled)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start
        ingest_cpu = (_cpu_seconds(pid) - ingest_before) / seconds
        bench_cpu = (time.process_time() - bench_before) / seconds
    ordered = sorted(latencies)
    return Latency(
        sent=total,
        seconds=seconds,
        p50_ms=_percentile(ordered, 50) * 1000,
        p99_ms=_percentile(ordered, 99) * 1000,
        max_ms=ordered[-1] * 1000,
        outcomes=dict(outcomes),
        late_ms=late * 1000,
        ingest_cpu=ingest_cpu,
        bench_cpu=bench_cpu,
    )


async def parts_pipeline(run: Run, raw: Raw | None, logs: Path) -> None:
    run.loads["2"] = _load()
    _say(
        f"\n[2/4] end to end, limits off: {E2E_ANSWERS} answers created in the sandbox portal, "
        "their ONCRMDYNAMICITEMADD webhooks posted to ingest by the bench "
        f"(load {run.loads['2']}) …"
    )
    measure_e2e = "b24-nps end to end, limits off"
    measure_latency = f"Ingest latency at {LATENCY_RATE:.0f} webhooks/s"
    try:
        async with _scratch("e2e") as (dsn, amqp_url):
            stack = QuietPortalStack(
                database_url=dsn,
                rabbitmq_url=amqp_url,
                config=_unlimited_config(logs),
                log_dir=logs / "e2e",
                sandbox_args=["--seed", "demo", "--no-limits"],
            )
            async with running(stack, ("sandbox", *PIPELINE)):
                try:
                    e2e = await end_to_end(stack, dsn, amqp_url, E2E_ANSWERS)
                except Exception as exc:
                    _failed(run, measure_e2e, exc)
                    _failed(run, measure_latency, BenchError("needs part 2's items"))
                    return
                _show_e2e(run, e2e, raw)
                for name in DOWNSTREAM:
                    await asyncio.to_thread(stack.stop, name)
                run.loads["3"] = _load()
                _say(
                    f"\n[3/4] ingest latency: open loop at {LATENCY_RATE:.0f} webhooks/s for "
                    f"{LATENCY_SECONDS:g} s, ingest and the sandbox portal running, "
                    f"{', '.join(DOWNSTREAM)} stopped (load {run.loads['3']}) …"
                )
                try:
                    latency = await ingest_latency(stack, e2e)
                except Exception as exc:
                    _failed(run, measure_latency, exc)
                    return
                _show_latency(run, latency)
    except Exception as exc:
        _failed(run, measure_e2e, exc)


def _busiest(cpu: dict[str, float]) -> tuple[str, float]:
    """The b24-nps service process that used the most CPU, and how much."""
    name = max(PIPELINE, key=lambda service: cpu.get(service, 0.0))
    return name, cpu.get(name, 0.0)


def _show_e2e(run: Run, e2e: EndToEnd, raw: Raw | None) -> None:
    ratio = f"{e2e.rate / raw.rate:.2f} x raw" if raw else "ratio n/a (no raw figure)"
    actions = ", ".join(f"{name} {n}" for name, n in e2e.actions.items())
    refused = ", ".join(f"{name} {n}" for name, n in e2e.refused.items()) or "none"
    _say(
        f"      {e2e.items} webhooks accepted in {e2e.accept_s:.1f} s "
        f"({e2e.items / e2e.accept_s:,.0f}/s, {E2E_CONCURRENCY} in flight; not accepted: "
        f"{refused}) → {e2e.answers} product answers scored → {sum(e2e.actions.values())} CRM "
        f"actions done ({actions}); last done {e2e.seconds:.1f} s after the first webhook"
    )
    cap = _cpu_cap(e2e.cpu, e2e.items)
    costs = (
        f"CPU ms per webhook: {_cpu_line(e2e.cpu, e2e.items)}, so at that cost these CPUs carry "
        f"at most {cap:,.0f} webhooks/s"
    )
    _say(f"      {costs}")
    _say(f"      {e2e.rate:,.0f} events/s = {ratio} (target ≥ {TARGET_RATIO} x raw)")
    notes = [costs]
    if raw:
        busiest, seconds = _busiest(e2e.cpu)
        per_core = e2e.items / seconds
        bound = (
            f"with a core for each process, as on a machine with more CPUs, each side is bound "
            f"by its busiest single process: b24-nps by {busiest} at "
            f"{seconds * 1000 / e2e.items:.1f} ms per webhook (≤ {per_core:,.0f}/s), the raw "
            f"ceiling by its Python client at {raw.client_ms:.2f} ms per message "
            f"(≤ {raw.per_core:,.0f}/s): ≤ {per_core / raw.per_core:.2f} x raw; "
            f"{TARGET_RATIO} x that raw figure at this CPU cost per webhook needs "
            f"{TARGET_RATIO * raw.per_core * sum(e2e.cpu.values()) / e2e.items:.1f} CPUs"
        )
        _say(f"      {bound}")
        notes.append(bound)
    run.rows.append(
        Row(
            "b24-nps end to end, limits off (webhook → CRM commands done)",
            f"{e2e.rate:,.0f} events/s ({ratio})",
            f"≥ {TARGET_RATIO} x raw",
            f"{e2e.items} answers created in the sandbox portal (no event handler on it), their "
            f"ONCRMDYNAMICITEMADD webhooks posted to ingest by the bench, {E2E_CONCURRENCY} in "
            f"flight (posted in {e2e.accept_s:.1f} s; not accepted: {refused}); "
            f"{e2e.answers} product answers, {sum(e2e.actions.values())} CRM actions "
            f"({actions}); {e2e.seconds:.1f} s from the first webhook posted to the last CRM "
            f"action done; {'; '.join(notes)}",
            met=e2e.rate / raw.rate >= TARGET_RATIO if raw else None,
        )
    )


def _show_latency(run: Run, latency: Latency) -> None:
    outcomes = ", ".join(f"{name} {n}" for name, n in sorted(latency.outcomes.items()))
    cpu = (
        f"ingest answered {latency.sent / latency.seconds:.0f}/s on average and used "
        f"{latency.ingest_cpu:.2f} cores, the generator {latency.bench_cpu:.2f} (at most "
        f"{latency.late_ms:.1f} ms behind schedule)"
    )
    _say(
        f"      {latency.sent} webhooks in {latency.seconds:.1f} s: p50 {latency.p50_ms:.1f} ms, "
        f"p99 {latency.p99_ms:.1f} ms, max {latency.max_ms:.1f} ms (target p99 ≤ "
        f"{TARGET_P99_MS:.0f} ms); {outcomes}"
    )
    _say(f"      {cpu}")
    run.rows.append(
        Row(
            f"Ingest latency at {LATENCY_RATE:.0f} webhooks/s (open loop)",
            f"p50 {latency.p50_ms:.1f} ms · p99 {latency.p99_ms:.1f} ms",
            f"p99 ≤ {TARGET_P99_MS:.0f} ms",
            f"{latency.sent} ONCRMDYNAMICITEMUPDATE events for part 2's items, each with its own "
            f"ts, over {latency.seconds:.1f} s; ingest (HTTP endpoint, hydrator reading every item "
            f"from the portal, outbox relay) and the sandbox portal running, "
            f"{', '.join(DOWNSTREAM)} stopped so that ingest is measured, not the machine's "
            f"other work; {LATENCY_CONNECTIONS} keep-alive connections; from each request's "
            f"scheduled send time to its response; max {latency.max_ms:.1f} ms; {outcomes}; {cpu}",
            met=latency.p99_ms <= TARGET_P99_MS,
        )
    )


# --- 4. backlog drain ------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    patches: int
    contacts: int
    seconds: float
    steady: float | None
    wall_s: float
    rss_start: int
    rss_peak: int
    requests: int
    limit_errors: dict[str, int]
    outcomes: dict[str, int]
    dead: int
    lead_latencies: list[float] = field(default_factory=list)
    """Webhook posted → service lead done, seconds, ascending (the detractors' stream)."""
    detractors: int = 0

    @property
    def rate(self) -> float:
        return self.patches / self.seconds

    @property
    def growth_mb(self) -> float:
        return (self.rss_peak - self.rss_start) / 2**20


async def _contact_ids(http: httpx.AsyncClient, webhook: str) -> list[int]:
    ids: list[int] = []
    while True:
        reply = await http.post(
            f"{webhook}crm.contact.list",
            json={
                "order": {"ID": "ASC"},
                "filter": {">ID": ids[-1] if ids else 0},
                "select": ["ID"],
                "start": -1,
            },
        )
        page = [int(row["ID"]) for row in reply.raise_for_status().json()["result"]]
        if not page:
            return ids
        ids += page


async def _seed_contacts(http: httpx.AsyncClient, webhook: str, wanted: int) -> list[int]:
    """`wanted` contacts of the portal: the seeded ones and, when they are too few, more added
    with `batch` (`crm.item.add`, as the sandbox has no `crm.contact.add`) while limits are off."""
    ids = await _contact_ids(http, webhook)
    missing = wanted - len(ids)
    while missing > 0:
        size = min(50, missing)
        commands = {
            f"c{n}": "crm.item.add?"
            + urlencode(
                {
                    "entityTypeId": CONTACT,
                    "fields[name]": "Bench",
                    "fields[lastName]": f"Contact {missing - n}",
                }
            )
            for n in range(size)
        }
        reply = await http.post(f"{webhook}batch", json={"halt": 1, "cmd": commands})
        errors = reply.raise_for_status().json()["result"].get("result_error")
        if errors:
            raise BenchError(f"adding contacts to the sandbox failed: {errors}")
        missing -= size
    return (await _contact_ids(http, webhook))[:wanted]


def _backlog_actions(n: int, contacts: Sequence[int], info: dict[str, Any]) -> list[RouteAction]:
    """`n` contact actions, round-robin over `contacts`; each round is a newer answer with
    another score, so every action is a real patch (score, date and a history entry)."""
    config = load_portal_config(EXAMPLE_CONFIG)
    segments = [
        s
        for s in config.survey.segments
        if isinstance(s, EquipmentSegment) and s.contact_fields is not None
    ]
    if not segments:
        raise BenchError(f"{EXAMPLE_CONFIG} has no equipment segment with contact fields")
    portal = PortalRef(member_id=str(info["member_id"]), domain=str(info["domain"]))
    base = datetime.now(UTC) - timedelta(days=1)
    actions = []
    for index in range(n):
        rnd, slot = divmod(index, len(contacts))
        segment = segments[index % len(segments)]
        score = (7 * rnd + slot) % 11
        when = base + timedelta(seconds=rnd)
        item_id = 1_000_000 + index
        answer = ScoredAnswer(
            answer_id=f"{portal.key}:{item_id}:{segment.product.sku}",
            portal=portal,
            entity_type_id=config.survey.entity_type_id,
            item_id=item_id,
            category_id=segment.category_id,
            segment=segment.name or segment.product.name,
            kind="equipment",
            sku=segment.product.sku,
            product_name=segment.product.name,
            scale=config.nps.scale,
            score=score,
            category="promoter" if score >= 9 else "passive" if score >= 7 else "detractor",
            contact_id=contacts[slot],
            submitted_at=when,
            updated_at=when,
        )
        actions.append(
            RouteAction(
                correlation_id=str(uuid.uuid4()),
                action_id=str(uuid.uuid4()),
                action="contact",
                rule="builtin:contact",
                answer=answer,
            )
        )
    return actions


async def _publish(amqp_url: str, actions: Sequence[RouteAction]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        window = 1000
        for first in range(0, len(actions), window):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            json.dumps(action.model_dump(mode="json")).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=str(action.event_id),
                            correlation_id=action.correlation_id,
                            content_type="application/json",
                        ),
                        routing_key=action.routing_key(),
                    )
                    for action in actions[first : first + window]
                )
            )


@contextlib.asynccontextmanager
async def _burst_spent(stack: Stack, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The shared budget's burst used up, as on any busy portal, and kept used up (2 requests/s
    of `user.get` through the same budget row crm_sync's client uses) until the block ends:
    the drain then runs at the sustained rate from its first request."""
    url = stack.webhook_url
    budget = PgRateBudget(pool, portal_key(url), STANDARD, operating_limit_s=480.0)
    async with Bitrix24Client(url, budget) as client:
        for _ in range(int(budget.capacity)):
            await client.call("user.get", {"ID": SANDBOX_USER_ID})

        async def keep_spending() -> None:
            while True:
                await client.call("user.get", {"ID": SANDBOX_USER_ID})

        keeper = asyncio.create_task(keep_spending())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper


async def _calls(http: httpx.AsyncClient) -> tuple[int, dict[str, int]]:
    report = (await http.get("/sandbox/calls", params={"limit": 0})).raise_for_status().json()
    return int(report["requests"]), {k: int(v) for k, v in report["limit_errors"].items()}


def _steady(stamps: Sequence[float]) -> float | None:
    """Completions per second after the first group finished (the pipeline's fill excluded)."""
    if len(stamps) < 2:
        return None
    first = [stamp for stamp in stamps if stamp <= stamps[0] + 0.05]
    span = stamps[-1] - stamps[0]
    return (len(stamps) - len(first)) / span if span > 0 else None


@dataclass
class Detractors:
    """Detractor answers arriving at a steady rate: each a Laser A item scored low created in
    the sandbox, then its webhook posted to ingest; when each webhook went (Unix time). The
    sandbox's `info` and `contacts` are read before its limits are on."""

    stack: Stack
    every_s: float
    posted: dict[int, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    contacts: list[int] = field(default_factory=list)

    @property
    def portal(self) -> str:
        return PortalRef(member_id=str(self.info["member_id"])).key

    def answer_ids(self) -> list[str]:
        return [f"{self.portal}:{item}:EQ-LASER-A" for item in self.posted]

    async def run(self) -> None:
        async with (
            httpx.AsyncClient(base_url=self.stack.sandbox_url, timeout=60) as http,
            httpx.AsyncClient(base_url=self.stack.ingest_url, timeout=60) as ingest,
        ):
            events = Events(self.info)
            contacts = self.contacts
            tick = time.monotonic()
            while True:
                item = {
                    "categoryId": DETRACTOR_SEGMENT,
                    "UF_CRM_5_SCORE": DETRACTOR_SCORE,
                    "contactId": contacts[len(self.posted) % len(contacts)],
                    "UF_CRM_5_COMMENT": "It stopped working",
                }
                reply = await http.post("/sandbox/answers", json={"items": [item]})
                (created,) = reply.raise_for_status().json()["created"]
                body = events.body("ONCRMDYNAMICITEMADD", created, int(time.time()))
                self.posted[created] = time.time()
                reply = await ingest.post(
                    "/webhooks/bitrix24",
                    content=body.encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                outcome = reply.json().get("status") if reply.is_success else reply.status_code
                if outcome != "accepted":
                    raise BenchError(f"ingest did not accept a detractor's webhook: {outcome}")
                tick += self.every_s
                await asyncio.sleep(max(0.0, tick - time.monotonic()))

    def latencies(self, taken: Sequence[Any]) -> list[float]:
        """Webhook → service lead done, for every detractor whose lead is done."""
        leads = {
            int(a.answer_id.split(":")[1]): a.done_at.timestamp()
            for a in taken
            if a.action == "service" and a.done_at is not None
        }
        return sorted(leads[item] - posted for item, posted in self.posted.items() if item in leads)


async def backlog_drain(n: int, logs: Path) -> Drain:
    wanted = min(n, max(1, BACKLOG_CONTACTS))
    async with _scratch("backlog") as (dsn, amqp_url):
        stack = QuietPortalStack(
            database_url=dsn,
            rabbitmq_url=amqp_url,
            config=EXAMPLE_CONFIG,
            log_dir=logs / "backlog",
            sandbox_args=["--seed", "demo", "--no-limits"],
        )
        detractors = Detractors(stack, DETRACTOR_EVERY_S)
        stream: asyncio.Task[None] | None = None
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            async with (
                running(stack, ("sandbox",)),
                httpx.AsyncClient(base_url=stack.sandbox_url, timeout=120) as http,
            ):
                info = (await http.get("/sandbox/info")).raise_for_status().json()
                contacts = await _seed_contacts(http, stack.webhook_url, wanted)
                detractors.info, detractors.contacts = info, contacts
                standard = Limits(per_second=STANDARD.per_second, burst=STANDARD.burst)
                reply = await http.put("/sandbox/limits", json=standard.model_dump())
                reply.raise_for_status()
                _say(f"      {len(contacts)} contacts; publishing {n} route.contact actions …")
                published = time.perf_counter()
                await _publish(amqp_url, _backlog_actions(n, contacts, info))
                depth = (await _queue_depths(amqp_url, [CRM_SYNC_ACTIONS.name]))[
                    CRM_SYNC_ACTIONS.name
                ]
                _say(
                    f"      {depth} waiting in {CRM_SYNC_ACTIONS.name} "
                    f"({time.perf_counter() - published:.1f} s); spending the burst, "
                    "starting crm_sync …"
                )
                if DETRACTOR_EVERY_S > 0:
                    for name in ("ingest", "scoring", "router"):
                        await asyncio.to_thread(stack.start, name)
                async with _burst_spent(stack, pool):
                    wall = time.perf_counter()
                    await asyncio.to_thread(stack.start, "crm_sync")
                if DETRACTOR_EVERY_S > 0:
                    stream = asyncio.create_task(detractors.run())
                before = await _calls(http)
                pid = stack.procs["crm_sync"].pid
                rss_start = _proc_status(pid)["VmRSS"]
                shown = time.monotonic()
                dlq = CRM_SYNC_ACTIONS.dlq

                async def probe() -> tuple[int, int, int]:
                    nonlocal shown
                    if stack.procs["crm_sync"].poll() is not None:
                        raise BenchError(f"crm_sync exited: {stack.tail('crm_sync')}")
                    if stream is not None and stream.done():
                        stream.result()
                        raise BenchError("the detractors' stream ended early")
                    async with pool.acquire() as conn:
                        states = await crm_sync_read.action_states(conn, None)
                        theirs = await crm_sync_read.actions(conn, None, detractors.answer_ids())
                    backlog = states.done - sum(1 for a in theirs if a.state == "done")
                    dead = (await _queue_depths(amqp_url, [dlq]))[dlq]
                    if time.monotonic() - shown >= 30:
                        shown = time.monotonic()
                        status = _proc_status(pid)
                        elapsed = time.perf_counter() - wall
                        _say(
                            f"      {backlog:,}/{n:,} done after {elapsed:.0f} s "
                            f"({backlog / elapsed:.1f}/s; {len(detractors.posted)} detractors); "
                            "RSS "
                            f"{status['VmRSS'] / 2**20:.0f} MB, peak "
                            f"{status['VmHWM'] / 2**20:.0f} MB"
                        )
                    return backlog, states.pending, dead

                # The detractors' own actions count too: the drain is over once the backlog's
                # n are done, whatever else was done meanwhile.
                done, _, dead = await _until(
                    probe,
                    lambda state: state[0] + state[2] >= n,
                    lambda state: state[0],
                    what="backlog drain",
                    interval_s=1.0,
                    stall_s=OPERATING_WINDOW_S + 60.0,  # a method parked by the portal
                )
                wall_s = time.perf_counter() - wall
                rss_peak = _proc_status(pid)["VmHWM"]
                after = await _calls(http)
                if stream is not None:
                    stream.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await stream
                    await asyncio.sleep(DETRACTOR_EVERY_S + 5.0)  # the last leads land
                async with pool.acquire() as conn:
                    everything = await crm_sync_read.actions(conn, None)
                detractor_answers = set(detractors.answer_ids())
                taken = [a for a in everything if a.answer_id not in detractor_answers]
                done = sum(1 for a in taken if a.state == "done")
                finished = sorted(a.done_at for a in taken if a.done_at is not None)
                stamps = [at.timestamp() for at in finished]
                first = min(a.created_at for a in taken).timestamp()
                outcomes = dict(
                    Counter(str(a.outcome) for a in taken if a.state == "done").most_common()
                )
                latencies = detractors.latencies(everything)
        finally:
            if stream is not None:
                stream.cancel()
            await pool.close()
    errors = {code: count - before[1].get(code, 0) for code, count in after[1].items()}
    return Drain(
        patches=done,
        contacts=len(contacts),
        seconds=stamps[-1] - first,
        steady=_steady(stamps),
        wall_s=wall_s,
        rss_start=rss_start,
        rss_peak=rss_peak,
        requests=after[0] - before[0],
        limit_errors=errors,
        outcomes=outcomes,
        dead=dead,
        lead_latencies=latencies,
        detractors=len(detractors.posted),
    )


async def part_backlog(run: Run, logs: Path) -> None:
    measure = "Backlog drain, standard limits (2 req/s, burst 50)"
    if BACKLOG <= 0:
        _say("\n[4/4] backlog drain: skipped (BENCH_BACKLOG=0)")
        run.rows.append(Row(measure, "skipped", "—", "BENCH_BACKLOG=0"))
        return
    run.loads["4"] = _load()
    _say(
        f"\n[4/4] backlog drain, standard limits: N = {BACKLOG:,} contact patches "
        f"(BENCH_BACKLOG; the issue asks for 100,000, ≈ {100_000 / TARGET_DRAIN / 60:.0f} min "
        f"at the target rate; load {run.loads['4']}) …"
    )
    try:
        drain = await backlog_drain(BACKLOG, logs)
    except Exception as exc:
        _failed(run, measure, exc)
        return
    steady = f"{drain.steady:.1f}" if drain.steady is not None else "n/a"
    outcomes = ", ".join(f"{name} {n}" for name, n in drain.outcomes.items())
    errors = ", ".join(f"{code} {n}" for code, n in drain.limit_errors.items())
    _say(
        f"      {drain.patches:,} patches over {drain.contacts:,} contacts in "
        f"{drain.seconds:.1f} s = {drain.rate:.1f} patches/s (steady {steady}; target ≥ "
        f"{TARGET_DRAIN:.0f}); {drain.requests} requests, "
        f"{drain.patches / max(1, drain.requests):.1f} patches each; limit errors: {errors}"
    )
    _say(
        f"      crm_sync RSS {drain.rss_start / 2**20:.0f} MB when ready, peak "
        f"{drain.rss_peak / 2**20:.0f} MB: growth {drain.growth_mb:.1f} MB (target < "
        f"{TARGET_RSS_MB:.0f} MB); outcomes: {outcomes}"
        + (f"; {drain.dead} dead-lettered" if drain.dead else "")
    )
    urgent = DETRACTOR_EVERY_S > 0
    target = TARGET_DRAIN_WITH_URGENT if urgent else TARGET_DRAIN
    with_urgent = (
        f"; meanwhile {drain.detractors} detractor answers, one every {DETRACTOR_EVERY_S:g} s "
        "(BENCH_DETRACTOR_EVERY_S), their leads and tasks in the urgent lane"
        if urgent
        else ""
    )
    run.rows.append(
        Row(
            "Backlog drain, standard limits (2 req/s, burst 50): rate",
            f"{drain.rate:.1f} patches/s (steady {steady})",
            f"≥ {target:.0f}/s",
            f"N = {drain.patches:,} of {BACKLOG:,} patches over {drain.contacts:,} contacts "
            f"(BENCH_BACKLOG), burst spent first; {drain.seconds:.1f} s from the first action "
            f"begun to the last done ({drain.wall_s:.1f} s with crm_sync's start-up); "
            f"{drain.requests} requests; limit errors: {errors}; outcomes: {outcomes}"
            f"{with_urgent}",
            met=drain.rate >= target,
        )
    )
    if urgent:
        _show_leads(run, drain)
    run.rows.append(
        Row(
            "Backlog drain: crm_sync peak RSS growth",
            f"{drain.growth_mb:.1f} MB",
            f"< {TARGET_RSS_MB:.0f} MB",
            f"VmHWM {drain.rss_peak / 2**20:.0f} MB at the end minus VmRSS "
            f"{drain.rss_start / 2**20:.0f} MB when the process was ready",
            met=drain.growth_mb < TARGET_RSS_MB,
        )
    )


def _show_leads(run: Run, drain: Drain) -> None:
    measure = "Webhook → service lead while the backlog drains (urgent lane)"
    latencies = drain.lead_latencies
    if not latencies:
        run.rows.append(Row(measure, "no lead done", "—", "no detractor's lead was recorded"))
        return
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    _say(
        f"      webhook → service lead: p50 {p50:.2f} s · p99 {p99:.2f} s · max "
        f"{latencies[-1]:.2f} s over {len(latencies)} of {drain.detractors} detractors"
    )
    run.rows.append(
        Row(
            measure,
            f"p50 {p50:.2f} s · p99 {p99:.2f} s",
            f"p99 ≤ {TARGET_URGENT_P99_S:.0f} s",
            f"{len(latencies)} of {drain.detractors} detractor answers (a Laser A item scored "
            f"{DETRACTOR_SCORE} created in the sandbox, its webhook posted to ingest, one every "
            f"{DETRACTOR_EVERY_S:g} s) during the drain of the same run; from the webhook posted "
            f"to crm_sync's service action done (lead created and recorded); max "
            f"{latencies[-1]:.2f} s",
            met=p99 <= TARGET_URGENT_P99_S,
        )
    )


# --- the report ------------------------------------------------------------------------------


def _table(rows: Sequence[Row]) -> list[str]:
    verdicts = {True: "yes", False: "no", None: "—"}
    lines = ["| Measure | Result | Target | Met |", "|---|---|---|---|"]
    lines += [
        f"| {row.measure} | {row.result} | {row.target} | {verdicts[row.met]} |" for row in rows
    ]
    return lines


def write_results(machine: Sequence[tuple[str, str]], run: Run) -> None:
    lines = [
        "# Pipeline benchmark results",
        "",
        "Written by `python -m bench pipeline` (part of `make bench`): every figure below comes "
        "from one run on the machine described here. See the docstring of "
        "`bench/pipeline_bench.py` for how each one is measured.",
        "",
        "## Machine",
        "",
        *(f"- **{name}**: {value}" for name, value in machine),
        "",
        "## Figures",
        "",
        *_table(run.rows),
        "",
        "## How each figure was obtained",
        "",
        *(f"- **{row.measure}**: {row.detail}" for row in run.rows),
        "",
        "## Settings of this run",
        "",
        *(f"- {note}" for note in run.notes),
        "- 1-minute load average as each part began: "
        + ", ".join(f"part {part} {load}" for part, load in run.loads.items())
        + f" ({len(os.sched_getaffinity(0))} CPUs; part 3 includes the running stack's own "
        "load). Anything else running on the machine shows here and lowers the figures.",
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")


async def bench() -> Run:
    configure_logging("warning")  # the migrations' info lines are not part of the report
    run = Run()
    machine = await describe_machine()
    _say("machine: " + "; ".join(f"{name} {value}" for name, value in machine))
    run.notes += [
        f"Part 2: BENCH_PIPELINE_ANSWERS = {E2E_ANSWERS}; the items are created in the sandbox "
        "portal first (not timed), then their webhooks are posted to ingest by the bench. The "
        "sandbox's own event sender opens a new HTTP client per event (~20 ms of CPU each), "
        "which would measure the sandbox on these two CPUs rather than b24-nps.",
        f"Part 3: {LATENCY_RATE:.0f} webhooks/s for BENCH_LATENCY_S = {LATENCY_SECONDS:g} s "
        f"after {LATENCY_WARMUP} warm-up requests, {LATENCY_CONNECTIONS} keep-alive "
        "connections from the bench process (its own lean HTTP/1.1 client), on the same CPUs as "
        "the services; scoring, router and crm_sync stopped.",
        f"Part 4: BENCH_BACKLOG = {BACKLOG:,} (the issue asks for 100,000), "
        f"BENCH_BACKLOG_CONTACTS = {BACKLOG_CONTACTS:,}, BENCH_DETRACTOR_EVERY_S = "
        f"{DETRACTOR_EVERY_S:g} (ingest, scoring and router up during the drain for them).",
    ]
    logs = Path(tempfile.mkdtemp(prefix="nps-bench-"))
    raw = await part_raw(run)
    await parts_pipeline(run, raw, logs)
    await part_backlog(run, logs)
    _say("\n" + "\n".join(_table(run.rows)))
    write_results(machine, run)
    _say(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    if run.failed:
        _say(f"service logs kept in {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return run


def main() -> None:
    run_loop(bench())


if __name__ == "__main__":
    main()
