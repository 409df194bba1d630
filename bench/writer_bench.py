"""The contact writer against the sandbox portal at standard limits (2 requests/s, burst 50).

N contact patches for distinct contacts, each needing its read before its write, done twice on
the same demo portal (different contacts each time):

- by crm_sync's `ContactWriter` (grouped reads, verify read + 48 updates per request, the
  shared PostgreSQL budget);
- the usual way with the `fast_bitrix24` client: `crm.contact.get` then `crm.contact.update`
  per contact, batched and throttled by the library itself.

Both runs start once the client has spent the portal's burst (50 quick requests of its own), so
the figures are the sustained rate the portal allows after the burst: the ceiling is 2 requests/s
times 50 commands = 100 commands/s. Limit errors are the portal's own count (sandbox inspection).

`python -m bench.writer_bench [N]` (default 3000, or `BENCH_WRITER_N`); `DATABASE_URL` names the
PostgreSQL server (a scratch database `nps_bench_<random>` is created and dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from fast_bitrix24 import BitrixAsync

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.contacts import ContactWriter
from services.crm_sync.policy import contact_fields_for, plan_patch
from services.harness import scratch
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import QUERY_LIMIT_EXCEEDED, SandboxPortal
from services.sandbox.seed import seed_demo
from shared.bitrix24 import Bitrix24Client, PgRateBudget, portal_key
from shared.db import create_pool
from shared.events import CrmWritten, PortalRef, RouteAction, ScoredAnswer
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, Rate, load_portal_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "portal.example.yaml"
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/nps")
DEFAULT_N = int(os.environ.get("BENCH_WRITER_N", "3000"))
RATE = Rate(per_second=2.0, burst=50)
CEILING = RATE.per_second * 50
SEGMENT = 12  # Laser A: score, date and history fields on the contact


@dataclass(frozen=True)
class Figures:
    name: str
    patches: int
    seconds: float
    requests: int
    limit_errors: dict[str, int]
    steady: float | None = None
    """Patches/s once the pipeline is full: from the first group done to the last."""

    @property
    def rate(self) -> float:
        return self.patches / self.seconds

    def show(self) -> None:
        errors = ", ".join(f"{code} {count}" for code, count in self.limit_errors.items())
        print(
            f"{self.name}: {self.patches} patches in {self.seconds:.1f} s = {self.rate:.1f} "
            f"patches/s ({self.rate / CEILING:.1%} of the {CEILING:.0f} commands/s ceiling); "
            f"{self.requests} requests, {self.patches / max(1, self.requests):.1f} patches each"
        )
        if self.steady is not None:
            print(
                f"  steady state (first group done → last): {self.steady:.1f} patches/s "
                f"({self.steady / CEILING:.1%} of the ceiling)"
            )
        print(f"  limit errors (portal's count): {errors}")


def steady_rate(stamps: Sequence[float]) -> float | None:
    """Completions per second after the first group completed (the pipeline's fill excluded)."""
    ordered = sorted(stamps)
    first = [stamp for stamp in ordered if stamp <= ordered[0] + 0.05]
    span = ordered[-1] - ordered[0]
    return (len(ordered) - len(first)) / span if span > 0 else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def sandbox_server(portal: SandboxPortal) -> AsyncIterator[str]:
    """The portal served over real HTTP on a free port; yields its webhook URL."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(portal), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/rest/{portal.user_id}/{portal.secret}/"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[asyncpg.Pool]:
    """A pool on a new, migrated database of its own on `DATABASE_URL`, dropped after."""
    async with scratch.scratch_database(DATABASE_URL, scratch.scratch_name("bench_writer")) as dsn:
        pool = await create_pool(dsn, max_size=10)
        try:
            yield pool
        finally:
            await pool.close()


def _action(portal_ref: PortalRef, contact_id: int, now: datetime) -> RouteAction:
    answer = ScoredAnswer(
        answer_id=f"{portal_ref.key}:{contact_id}:EQ-LASER-A",
        portal=portal_ref,
        entity_type_id=1038,
        item_id=100_000 + contact_id,
        category_id=SEGMENT,
        segment="Laser A",
        kind="equipment",
        sku="EQ-LASER-A",
        product_name="Laser A",
        scale="0-10",
        score=9,
        category="promoter",
        contact_id=contact_id,
        submitted_at=now,
        updated_at=now,
    )
    return RouteAction(
        correlation_id=str(uuid.uuid4()),
        action_id=str(uuid.uuid4()),
        action="contact",
        rule="builtin:contact",
        answer=answer,
    )


def _counts(portal: SandboxPortal) -> tuple[int, dict[str, int]]:
    report = portal.calls_report(limit=0)
    return report["requests"], dict(report["limit_errors"])


def _since(after: tuple[int, dict[str, int]], before: tuple[int, dict[str, int]]) -> Any:
    return after[0] - before[0], {k: v - before[1].get(k, 0) for k, v in after[1].items()}


async def run_writer(
    portal: SandboxPortal, url: str, pool: asyncpg.Pool, config: PortalConfig, ids: Sequence[int]
) -> Figures:
    budget = PgRateBudget(pool, portal_key(url), RATE)
    async with Bitrix24Client(url, budget) as client:
        for _ in range(int(budget.capacity)):  # spend the burst: the run starts at 2 requests/s
            await client.call("user.get", {"ID": portal.user_id})
        writer = ContactWriter(pool, Outbox(), CommandCoalescer(client), config)
        ref = PortalRef(member_id=f"bench-{uuid.uuid4().hex[:8]}")
        now = datetime.now(UTC)
        actions = [_action(ref, contact_id, now) for contact_id in ids]
        stamps: list[float] = []

        async def patch(action: RouteAction) -> CrmWritten | None:
            event = await writer.patch(action)
            stamps.append(time.perf_counter())
            return event

        before = _counts(portal)
        started = time.perf_counter()
        events = await asyncio.gather(*(patch(action) for action in actions))
        seconds = time.perf_counter() - started
    requests, errors = _since(_counts(portal), before)
    patched = sum(1 for event in events if event is not None and event.outcome != "skipped")
    return Figures(
        "crm_sync ContactWriter", patched, seconds, requests, errors, steady_rate(stamps)
    )


async def run_fast_bitrix24(
    portal: SandboxPortal, url: str, config: PortalConfig, ids: Sequence[int]
) -> Figures:
    fields = contact_fields_for(_action(PortalRef(), 1, datetime.now(UTC)), config)
    assert fields is not None
    bx = BitrixAsync(url, verbose=False, ssl=False)
    for _ in range(RATE.burst):  # spend the burst, as for the writer
        await bx.call("user.get", {"ID": portal.user_id})
    ref = PortalRef(member_id=f"bench-{uuid.uuid4().hex[:8]}")
    now = datetime.now(UTC)
    before = _counts(portal)
    started = time.perf_counter()
    contacts = await bx.get_by_ID("crm.contact.get", list(ids))
    updates = []
    for contact_id in ids:
        current = contacts[contact_id] if contact_id in contacts else contacts[str(contact_id)]
        plan = plan_patch(fields, _action(ref, contact_id, now).answer, current, {})
        writes = {write.field: write.value for write in plan.writes()}
        if writes:
            updates.append(
                {"ID": contact_id, "FIELDS": writes, "PARAMS": {"REGISTER_SONET_EVENT": "N"}}
            )
    await bx.call("crm.contact.update", updates)
    seconds = time.perf_counter() - started
    requests, errors = _since(_counts(portal), before)
    return Figures("fast_bitrix24 get+update", len(ids), seconds, requests, errors)


async def bench(n: int) -> None:
    config = load_portal_config(CONFIG)
    portal = SandboxPortal(limits=Limits(per_second=RATE.per_second, burst=RATE.burst))
    seed_demo(portal, config_path=CONFIG, contacts=2 * n, seed=7)
    ids = sorted(portal.crm.records(CONTACT))
    print(
        f"sandbox portal over HTTP, limits {RATE.per_second:g} requests/s burst {RATE.burst}; "
        f"{n} patches per client, distinct contacts (~40% hold legacy values)"
    )
    async with sandbox_server(portal) as url, scratch_database() as pool:
        ours = await run_writer(portal, url, pool, config, ids[:n])
        ours.show()
        theirs = await run_fast_bitrix24(portal, url, config, ids[n : 2 * n])
        theirs.show()
    steady = f"{ours.steady:.1f}" if ours.steady is not None else "n/a"
    print(
        f"writer / fast_bitrix24: {ours.rate / theirs.rate:.2f}x (target >= 1.8x); writer "
        f"sustained {ours.rate:.1f} patches/s overall, {steady} steady (target >= 95); "
        f"writer {QUERY_LIMIT_EXCEEDED}: {ours.limit_errors.get(QUERY_LIMIT_EXCEEDED, 0)} "
        "(target 0)"
    )


def main(argv: list[str] | None = None) -> None:
    args = argv or []
    n = int(args[0]) if args else DEFAULT_N
    asyncio.run(bench(n))


if __name__ == "__main__":
    main(sys.argv[1:])
