"""`make run-app` as a person walks it (README, "As a Bitrix24 application"): `nps run all` in
application mode starts the sandbox with two portals and every process; the application is
installed on both from their install flow, the robot "Send NPS survey" runs on a deal of
alpha, sales close on both, the customers answer the e-mails' survey links, and the
application's page opened in each portal (the reports app's `/frame`, as the portal POSTs it)
shows that portal's answers only. Once beta uninstalls, its page is refused and alpha's still
opens; Ctrl-C stops everything."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.ops.demo_plan import csrf_field, on_scale, request_of, score_choices, survey_link
from tests.support.run_all import HOSTS, PORTS, RUNNING, RunAll, run_all_env, running

SCORES = {"alpha": 3, "beta": 9}
"""What each portal's customers answer: alpha's are all detractors, beta's all promoters."""
TIMEOUT_S = 90.0
ROBOT = "b24nps_send_survey"


@pytest.fixture
async def env(pg_server: str, amqp_server: str) -> AsyncIterator[dict[str, str]]:
    """`make run-app`'s environment: a database and a vhost of its own, free ports, no
    application registered (so the sandbox plays the portals and the OAuth server)."""
    async with run_all_env(
        "run_app",
        pg_server,
        amqp_server,
        dropped={"BITRIX24_WEBHOOK_URL", "BITRIX24_CLIENT_ID", "BITRIX24_CLIENT_SECRET"},
        hosts=(*HOSTS, "APP_HOST"),
        ports=(*PORTS, "APP_PORT"),
        NPS_MODE="app",
        APP_PORTALS_RELOAD_S="1",
    ) as env:
        yield env


@pytest.fixture
def run_app(env: dict[str, str]) -> Iterator[RunAll]:
    with running(env) as started:
        yield started


async def until(what: str, check: Any) -> Any:
    """`check()`'s first truthy answer, polled."""
    deadline = time.monotonic() + TIMEOUT_S
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)
    return found


async def answer_links(
    sandbox: httpx.AsyncClient, pool: asyncpg.Pool, portals: dict[str, str]
) -> dict[str, int]:
    """Every survey e-mail of the portals answered on the survey page as its customer would
    (its portal's score); how many each portal's customers answered."""
    rows = await pool.fetch(
        "SELECT request_id::text, portal FROM dispatch_requests"
        " WHERE channel = 'email' AND sends > 0 AND portal = ANY($1::text[])",
        list(portals.values()),
    )
    name_of = {key: name for name, key in portals.items()}
    portal_of = {row["request_id"]: name_of[row["portal"]] for row in rows}
    inbox = (await sandbox.get("/inbox.json")).json()
    answered = dict.fromkeys(portals, 0)
    for message in inbox["messages"]:
        request_id = request_of(message.get("message_id"), portal_of)
        link = survey_link(message.get("links") or [])
        if request_id is None or link is None:
            continue
        name = portal_of[request_id]
        async with httpx.AsyncClient(timeout=30) as customer:
            page = await customer.get(link)
            assert page.status_code == 200, page.text
            csrf = csrf_field(page.text)
            assert csrf is not None
            score = on_scale(SCORES[name], score_choices(page.text))
            sent = await customer.post(link, data={"csrf": csrf, "score": str(score)})
            assert sent.status_code == 303, sent.text
        answered[name] += 1
    return answered


async def frame_form(sandbox: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """What portal `name` POSTs into the frame of the application's page (as its user 1)."""
    form: dict[str, Any] = (await sandbox.get(f"/p/{name}/sandbox/frame")).json()
    return form


async def open_application(form: dict[str, Any]) -> httpx.Response:
    """The application's page: the portal's form posted to the handler URL (the reports app's
    `/frame`), its redirect followed."""
    async with httpx.AsyncClient(timeout=30, follow_redirects=True) as frame:
        return await frame.post(form["action"], data=form["body"])


def summary(page: str) -> tuple[int, int, int, int]:
    """The trend's answers, promoters, passives and detractors."""
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    found = re.search(r"(\d+) answers (\d+) promoters (\d+) passives (\d+) detractors", text)
    assert found is not None, text[:2000]
    answers, promoters, passives, detractors = (int(g) for g in found.groups())
    return answers, promoters, passives, detractors


async def test_two_portals_install_ask_answer_and_each_sees_its_own_dashboard(
    run_app: RunAll, env: dict[str, str]
) -> None:
    await asyncio.to_thread(run_app.wait_for, RUNNING)
    sandbox_url = f"http://127.0.0.1:{env['SANDBOX_PORT']}"
    assert set(run_app.pids()) == {
        "sandbox",
        "app",
        "ingest",
        "scoring",
        "router",
        "crm_sync",
        "dispatch",
        "reports",
        "survey",
    }
    for name in SCORES:
        assert f"{name}: {sandbox_url}/p/{name}/install" in run_app.output
        assert f"{name}: {sandbox_url}/p/{name}/app" in run_app.output

    pool = await asyncpg.create_pool(env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=30) as sandbox:
            portals: dict[str, str] = {}
            for name in SCORES:
                installed = (await sandbox.post(f"/p/{name}/sandbox/install", json={})).json()
                assert installed["installed"] is True, installed
                assert installed["install_page"]["calls_install_finish"] is True
                portals[name] = installed["form"]["body"]["member_id"]

            deals = (await sandbox.get("/p/alpha/sandbox/deals")).json()["deals"]
            open_deal = next(d["ID"] for d in deals if d["STAGE_ID"] not in ("WON", "LOSE"))
            launch = (
                await sandbox.post(
                    f"/p/alpha/sandbox/robots/{ROBOT}/run",
                    json={"deal_id": open_deal, "properties": {"survey": "After the sale"}},
                )
            ).json()

            async def robot_answered() -> dict[str, Any] | None:
                got = (await sandbox.get(f"/p/alpha/sandbox/robot-launches/{launch['id']}")).json()
                return got if got["status"] == "answered" else None

            answered_launch = await until("the robot's answer", robot_answered)
            assert answered_launch["return_values"]["sent"] == "Y", answered_launch

            for name in SCORES:
                closed = await sandbox.post(f"/p/{name}/sandbox/close-sales", params={"count": 2})
                assert closed.status_code == 200, closed.text

            async def all_sent() -> bool:
                pending = await pool.fetchval(
                    "SELECT count(*) FROM dispatch_requests WHERE portal = ANY($1::text[])"
                    " AND channel = 'email' AND sends = 0 AND closed_at IS NULL",
                    list(portals.values()),
                )
                sent = await pool.fetchval(
                    "SELECT count(DISTINCT portal) FROM dispatch_requests"
                    " WHERE portal = ANY($1::text[]) AND sends > 0",
                    list(portals.values()),
                )
                inbox = (await sandbox.get("/inbox.json")).json()
                return pending == 0 and sent == 2 and len(inbox["messages"]) > 0

            await until("every survey e-mail sent", all_sent)
            answered = await answer_links(sandbox, pool, portals)
            assert answered["alpha"] >= 2, answered  # the robot's deal and the closed sales'
            assert answered["beta"] >= 1, answered

            async def scored() -> bool:
                rows = await pool.fetch(
                    "SELECT portal, count(*) FROM scoring_answers"
                    " WHERE portal = ANY($1::text[]) GROUP BY portal",
                    list(portals.values()),
                )
                counts = {row["portal"]: int(row["count"]) for row in rows}
                return all(counts.get(portals[n], 0) >= answered[n] for n in SCORES)

            await until("every answer back through the portal and scored", scored)

            forms = {name: await frame_form(sandbox, name) for name in SCORES}
            for name in SCORES:
                page = await open_application(forms[name])
                assert page.status_code == 200, page.text
                assert "?s=" in str(page.url)
                answers, promoters, _, detractors = summary(page.text)
                assert answers == answered[name], (name, answers, answered)
                if name == "alpha":
                    assert (promoters, detractors) == (0, answers)
                else:
                    assert (promoters, detractors) == (answers, 0)

            assert (await sandbox.post("/p/beta/sandbox/uninstall")).status_code == 200
            refused = await open_application(forms["beta"])  # a tab left open on beta
            assert refused.status_code == 403, refused.text
            assert (await open_application(await frame_form(sandbox, "alpha"))).status_code == 200
    finally:
        await pool.close()

    os.killpg(run_app.proc.pid, signal.SIGINT)
    assert run_app.finish() == 0
