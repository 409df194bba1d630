"""The dispatch part of `nps demo`: sales closed in the sandbox portal, followed in dispatch's
register until their e-mails are in the sandbox's local inbox, some of them answered on the survey
page as their customers would (a detractor among them), then followed until the answers are in
the portal (the NPS deals moved to their funnel's success or failure stage).

It drives the running pipeline from outside, as a person does: the sandbox over HTTP, the survey
page over HTTP, and dispatch's register through its read module. Nothing personal is printed: no
link, token or e-mail address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from services.dispatch import read as register
from services.ops.demo_plan import (
    CUSTOMERS,
    MOVED,
    DispatchProgress,
    csrf_field,
    customers,
    on_scale,
    register_lines,
    request_of,
    score_choices,
    survey_link,
    survey_page,
)

POLL_S = 0.5
REGISTER_LIMIT = 10_000


class DispatchDemoError(RuntimeError):
    """The dispatch part did not finish; the message says what to look at."""


@dataclass(frozen=True)
class Answered:
    """What the demo did on the survey page: request id → the score given, and the requests
    whose link it only opened."""

    scores: dict[str, int]
    opened: list[str]


async def _close_sales(sandbox: httpx.AsyncClient, count: int) -> list[int]:
    reply = await sandbox.post("/sandbox/close-sales", params={"count": count})
    if reply.status_code == httpx.codes.CONFLICT:
        detail = reply.json().get("detail")
        raise DispatchDemoError(f"the sandbox portal refused to close sales: {detail}")
    closed: list[int] = reply.raise_for_status().json()["closed"]
    return closed


async def _requests(pool: asyncpg.Pool, sales: list[int], since: datetime) -> list[dict[str, Any]]:
    """The register's requests for the demo's sales."""
    async with pool.acquire() as conn:
        rows = await register.requests(
            conn, register.RegisterFilter(since=since, limit=REGISTER_LIMIT)
        )
    wanted = set(sales)
    return [row for row in rows if row["sale_deal_id"] in wanted and row["source"] != "campaign"]


async def _stages(sandbox: httpx.AsyncClient, deals: list[int]) -> dict[int, str]:
    """Where each NPS deal is: `success`, `failure`, or `open` while in progress."""
    stages = {}
    for deal in deals:
        found = (await sandbox.get(f"/sandbox/deals/{deal}")).raise_for_status().json()["deal"]
        stages[deal] = MOVED.get(str(found.get("STAGE_SEMANTIC_ID")), "open")
    return stages


async def _until(
    look: Callable[[], Awaitable[tuple[DispatchProgress, bool]]],
    deadline: float,
    echo: Callable[[str], None],
    waiting_for: str,
) -> None:
    """Poll `look` until it says done, printing the progress line when it changes."""
    last: DispatchProgress | None = None
    while True:
        progress, done = await look()
        if progress != last:
            echo(progress.line())
        last = progress
        if done:
            return
        if time.monotonic() > deadline:
            raise DispatchDemoError(
                f"{waiting_for} took too long ({progress.line()}); check that dispatch and the"
                " survey page of `make run` are up, `nps survey list` and `nps dlq list`"
            )
        await asyncio.sleep(POLL_S)


async def _mails(
    sandbox: httpx.AsyncClient, rows: list[dict[str, Any]], deadline: float
) -> dict[str, str]:
    """request id → its survey link, for every request sent by e-mail, from the local inbox."""
    sent = {str(r["request_id"]) for r in rows if r["channel"] == "email" and r["sends"] > 0}
    while True:
        reply = (await sandbox.get("/inbox.json")).raise_for_status().json()
        if not reply.get("listening"):
            raise DispatchDemoError(
                "the sandbox portal has no local inbox"
                f" ({reply.get('error') or 'started with --no-inbox'}); dispatch's e-mails"
                " cannot be read: restart `make run` with a free SANDBOX_SMTP_PORT"
            )
        links: dict[str, str] = {}
        for message in reply["messages"]:
            request_id = request_of(message.get("message_id"), sent)
            link = survey_link(message.get("links") or [])
            if request_id is not None and link is not None:
                links[request_id] = link
        if set(links) >= sent:
            return links
        if time.monotonic() > deadline:
            raise DispatchDemoError(
                f"{len(sent) - len(links)} of the {len(sent)} e-mails dispatch sent are not in"
                " the sandbox's inbox; dispatch's DISPATCH_SMTP_* must point at the sandbox's"
                " SANDBOX_SMTP_PORT"
            )
        await asyncio.sleep(POLL_S)


async def _open(customer: httpx.AsyncClient, link: str) -> httpx.Response:
    page = await customer.get(link)
    if page.status_code != httpx.codes.OK:
        raise DispatchDemoError(f"the survey page answered {page.status_code} to an e-mail's link")
    return page


async def _answer(customer: httpx.AsyncClient, link: str, wanted: int, comment: str) -> int:
    """Open the form, then submit a score and a comment with its CSRF field and cookie, as a
    browser does; the score given."""
    page = await _open(customer, link)
    csrf = csrf_field(page.text)
    offered = score_choices(page.text)
    if csrf is None or not offered:
        raise DispatchDemoError("the survey page's form has no CSRF field or no score to choose")
    score = on_scale(wanted, offered)
    reply = await customer.post(link, data={"csrf": csrf, "score": str(score), "comment": comment})
    if reply.status_code != httpx.codes.SEE_OTHER:
        raise DispatchDemoError(f"the survey page refused the answer ({reply.status_code})")
    return score


async def _play_customers(
    links: dict[str, str], answer: list[str], only_open: list[str]
) -> Answered:
    """Answer `answer`'s surveys (`CUSTOMERS`, in order), open `only_open`'s and leave them."""
    answered = Answered({}, [])
    for request_id, (wanted, comment) in zip(answer, CUSTOMERS, strict=False):
        # Each customer has a browser of their own (its cookies included).
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as customer:
            answered.scores[request_id] = await _answer(
                customer, links[request_id], wanted, comment
            )
    for request_id in only_open:
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as customer:
            await _open(customer, links[request_id])
        answered.opened.append(request_id)
    return answered


async def dispatch_ready(ready_url: str) -> None:
    """Refuse at once when dispatch is not running: closed sales would wait for it in vain."""
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            ready = (await http.get(ready_url)).status_code == httpx.codes.OK
    except httpx.HTTPError:
        ready = False
    if not ready:
        raise DispatchDemoError(
            f"dispatch is not ready ({ready_url} does not answer 200): start the pipeline with"
            " `make run` (it runs dispatch with the sandbox's inbox), or leave dispatch out of"
            " the demo with `nps demo --sales 0`"
        )


async def run_dispatch_demo(
    sandbox_url: str,
    pool: asyncpg.Pool,
    *,
    sales: int,
    timeout_s: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Close `sales` sales and follow them through dispatch, the inbox, the survey page and back
    into the portal; print and return what happened."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as sandbox:
        closed = await _close_sales(sandbox, sales)
        echo(
            f"\nDispatch: closed {len(closed)} sales in the sandbox portal (won, as a sales manager"
            " does); dispatch asks their customers by e-mail…"
        )
        deadline = time.monotonic() + timeout_s
        rows: list[dict[str, Any]] = []

        async def sending() -> tuple[DispatchProgress, bool]:
            nonlocal rows
            rows = await _requests(pool, closed, since)
            progress = DispatchProgress.of(closed, rows)
            return progress, progress.sending_done

        await _until(sending, deadline, echo, "sending the survey e-mails")
        links = await _mails(sandbox, rows, deadline)
        answer, only_open = customers(rows, links)
        echo(
            f"{len(links)} e-mails in the sandbox's inbox; on the survey page, as their"
            f" customers: {len(answer)} NPS survey(s) answered (a detractor first),"
            f" {len(only_open)} opened and left"
        )
        answered = await _play_customers(links, answer, only_open)
        deals = {
            str(row["request_id"]): row["nps_deal_id"]
            for row in rows
            if str(row["request_id"]) in answered.scores
        }

        async def written() -> tuple[DispatchProgress, bool]:
            nonlocal rows
            rows = await _requests(pool, closed, since)
            stages = await _stages(sandbox, list(deals.values()))
            moved = sum(1 for stage in stages.values() if stage != "open")
            progress = DispatchProgress.of(closed, rows, moved=moved, answering=len(deals))
            states = {str(row["request_id"]): row["state"] for row in rows}
            opened = all(states.get(rid) == "opened" for rid in answered.opened)
            done = (
                moved == len(deals)
                and opened
                and all(states.get(rid) == "answered" for rid in answered.scores)
            )
            return progress, done

        await _until(written, deadline, echo, "writing the answers into the portal")
        all_stages = await _stages(
            sandbox, [row["nps_deal_id"] for row in rows if row["nps_deal_id"] is not None]
        )
    async with pool.acquire() as conn:
        portals = {str(row["portal"]) for row in rows}
        counts = await register.state_counts(conn, portals.pop() if len(portals) == 1 else None)
    echo("")
    for line in register_lines(rows, counts, all_stages):
        echo(line)
    answered_deals = [deals[rid] for rid in answered.scores]
    return {
        "survey_page": survey_page(next(iter(links.values()))) if links else None,
        "deal": answered_deals[0] if answered_deals else None,
        "sales": closed,
        "requests": rows,
        "emails": len(links),
        "answered": {rid: (deals[rid], score) for rid, score in answered.scores.items()},
        "opened": answered.opened,
        "stages": all_stages,
        "register": counts,
    }
