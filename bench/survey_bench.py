"""The survey page under load: 100 concurrent respondents, each opening its personal link and
then answering (and changing its answer) several times, a person's pause (1-5 s) before each
send; the figure is submit → thank-you page: the POST that stores the answer and its event, the
redirect and the thank-you page, as a browser sees it. Target: p99 ≤ 50 ms. Then the same
respondents all press Send at once, with no pause: the page's capacity (answers/s) and what
such a burst costs in latency.

`nps run survey` runs as its own process (uvicorn, the outbox relay) on a scratch database and
RabbitMQ vhost of its own (dropped afterwards), on `DATABASE_URL` / `RABBITMQ_URL`.
`BENCH_SURVEY_RESPONDENTS`, `BENCH_SURVEY_ROUNDS` and `BENCH_SURVEY_THINK_S` (the pause,
`low-high`) change the load.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import httpx

from services.harness.scratch import scratch
from services.harness.stack import free_port
from services.survey.requests import new_request
from services.survey.store import add_request
from services.survey.tokens import LinkSigner
from shared.portal_config import load_portal_config

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/nps")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
RESPONDENTS = int(os.environ.get("BENCH_SURVEY_RESPONDENTS", "100"))
ROUNDS = int(os.environ.get("BENCH_SURVEY_ROUNDS", "5"))
THINK_S = tuple(float(part) for part in os.environ.get("BENCH_SURVEY_THINK_S", "1-5").split("-"))
TARGET_P99_MS = 50.0
KEY = "bench-survey-key"
CONFIG = Path("config/portal.example.yaml")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _links(dsn: str, base: str, count: int) -> list[str]:
    config = load_portal_config(CONFIG)
    signer = LinkSigner([KEY], 86400)
    conn = await asyncpg.connect(dsn)
    links = []
    try:
        for index in range(count):
            request = new_request(
                config,
                contact_id=index + 1,
                segment="12" if index % 2 else "10",
                product=None,
                lang="ru",
                portal="bench",
            )
            await add_request(conn, request)
            links.append(f"{base}/s/{signer.sign(request.request_id)}")
    finally:
        await conn.close()
    return links


async def _respondent(
    link: str, index: int, start: asyncio.Event, *, think_s: tuple[float, ...], rounds: int
) -> list[float]:
    """Open the link, then answer `rounds` times (each a change), pausing `think_s` (low, high)
    before each: the submit → thank-you times."""
    cosmetics = index % 2 == 0
    rng = random.Random(index)
    timings: list[float] = []
    async with httpx.AsyncClient(timeout=60, follow_redirects=True) as http:
        page = await http.get(link)
        page.raise_for_status()
        found = CSRF.search(page.text)
        assert found is not None, "no CSRF field on the page"
        await start.wait()
        for round_ in range(rounds):
            await asyncio.sleep(rng.uniform(think_s[0], think_s[-1]))
            score = str((index + round_) % 11)
            form = (
                {"tested_0": "1", "score_0": score, "tested_2": "1", "comment": "bench"}
                if cosmetics
                else {"score": score, "service": "1" if round_ % 2 else "", "comment": "bench"}
            )
            started = time.perf_counter()
            thanks = await http.post(link, data={"csrf": found.group(1), **form})
            timings.append((time.perf_counter() - started) * 1000)
            assert thanks.status_code == 200, thanks.status_code
            assert thanks.url.path.endswith("/thanks")
    return timings


def _start_page(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.cli", "run", "survey"], env=env)


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the survey page exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


async def run() -> None:
    async with scratch("bench_survey", DATABASE_URL, RABBITMQ_URL) as (dsn, amqp_url):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "RABBITMQ_URL": amqp_url,
            "NPS_CONFIG": str(CONFIG),
            "SURVEY_PORT": str(port),
            "SURVEY_KEYS": KEY,
            "SURVEY_RATE_PER_MINUTE": "1000000",
            "LOG_LEVEL": "warning",
        }
        env.pop("BITRIX24_WEBHOOK_URL", None)
        proc = await asyncio.to_thread(_start_page, env)
        try:
            await asyncio.to_thread(_wait_up, f"{base}/healthz", proc)
            links = await _links(dsn, base, RESPONDENTS)
            paced = await _load(links, think_s=THINK_S, rounds=ROUNDS)
            burst = await _load(links, think_s=(0.0,), rounds=1)
            conn = await asyncpg.connect(dsn)
            try:
                stored = await conn.fetchval("SELECT count(*) FROM survey_answers")
                versions = await conn.fetchval("SELECT sum(version) FROM survey_answers")
            finally:
                await conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    low, high = THINK_S[0], THINK_S[-1]
    print(f"{RESPONDENTS} concurrent respondents, {low:g}-{high:g} s pause before each send:")
    p99 = _report(*paced, ROUNDS)
    print(
        f"  p99 {p99:.1f} ms: {'within' if p99 <= TARGET_P99_MS else 'OVER'} the"
        f" {TARGET_P99_MS:.0f} ms target"
    )
    print(f"the same {RESPONDENTS} pressing Send at once:")
    _report(*burst, 1)
    print(f"stored {stored} answers, {versions} versions")


def _report(timings: list[float], wall: float, rounds: int) -> float:
    p99 = _percentile(timings, 0.99)
    print(
        f"  {len(timings)} submits ({rounds} each) in {wall:.1f} s ({len(timings) / wall:.0f}/s):"
        f" submit -> thank-you p50 {statistics.median(timings):.1f} ms,"
        f" p95 {_percentile(timings, 0.95):.1f} ms, p99 {p99:.1f} ms, max {max(timings):.1f} ms"
    )
    return p99


async def _load(
    links: list[str], *, think_s: tuple[float, ...], rounds: int
) -> tuple[list[float], float]:
    """Every respondent at work at once: (submit → thank-you times in ms, wall time in s)."""
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(_respondent(link, index, start, think_s=think_s, rounds=rounds))
        for index, link in enumerate(links)
    ]
    await asyncio.sleep(1.0)
    began = time.perf_counter()
    start.set()
    timings = [t for result in await asyncio.gather(*tasks) for t in result]
    return timings, time.perf_counter() - began


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
