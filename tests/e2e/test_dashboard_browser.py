"""The dashboard in Debian's headless Chromium: `nps run reports` on seeded data, every view
loaded in the browser and its numbers checked against the report API, a filter changed, and
screenshots saved under `artifacts/`. Inside a portal too: two sandbox portals (served over
HTTP) with the application installed by the application service, the frame entry posted as the
portal posts it, then the session's pages (that portal's answers only) and the settings page in
the browser.

The app is started without REPORTS_TOKEN, so it has to generate one and print it on stdout; the
browser gets in the way a person does, with `?token=` once (the app sets a cookie and redirects).
Chromium is driven by subprocess (`--dump-dom`, `--screenshot`): no browser library needed.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.harness.stack import free_port
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox
from services.scoring.handlers import score_submission
from shared.outbox import Outbox
from shared.settings import Settings
from tests.support.app import app_registration, app_service, two_names, until_row
from tests.support.browser import CHROMIUM_FLAGS, chromium
from tests.support.dashboard import figures, shown, shown_scores
from tests.support.dispatch import DEAL_SURVEY, LASER_PRODUCT, LASER_SURVEY, Register
from tests.support.followup import Followed, example_config
from tests.support.scoring import make_submission
from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
WEBHOOK = "https://acme.bitrix24.ru/rest/1/e2e-w3bh00k-s3cret/"
TOKEN_LINE = re.compile(rb"\?token=([A-Za-z0-9_\-]+)")


class Browser:
    """One Chromium profile; each call is a fresh headless run that shares its cookies."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
        return done.stdout

    def dom(self, url: str) -> str:
        """The page's DOM after Chromium loaded it (redirects followed, cookies kept)."""
        return self._run("--dump-dom", url)

    def screenshot(self, url: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._run("--hide-scrollbars", f"--screenshot={path}", url)


async def seed(pool: asyncpg.Pool, member: str) -> dict[str, uuid.UUID]:
    """Cosmetics and an equipment laser over three months, with managers 5 and 7 (ingest has
    read the name of 7 from the portal); and dispatch's register (its own handlers): a sale of
    manager 7 asked its deal survey (answered), one of manager 5 its deal survey (unanswered,
    call task 7001), a later laser sale of manager 7 its laser survey (opened, awaiting an
    answer). The requests' ids by name."""
    await pool.execute(
        "INSERT INTO ingest_users (portal, user_id, name, refreshed_at) VALUES ($1, 7, $2, now())",
        member,
        "Maria Lebedeva",
    )
    answers: list[tuple[int, list[tuple[str, int | None]], str, dict[str, Any]]] = [
        (1, [("SERUM", 10), ("CREAM", 8)], "2024-03-05T10:00:00+03:00", {}),
        (2, [("SERUM", 4)], "2024-04-10T10:00:00+03:00", {"responsible_id": 7}),
        (3, [("CREAM", 9), ("SERUM", 9)], "2024-05-20T10:00:00+03:00", {"responsible_id": 7}),
        (
            10,
            [("LASER", 1)],
            "2024-04-02T09:00:00+03:00",
            {"service_request": True, "comment": "<b>laser broke</b>", "contact_id": 611},
        ),
        (11, [("LASER", 10)], "2024-05-03T09:00:00+03:00", {"responsible_id": None}),
    ]
    laser = {"kind": "equipment", "category_id": 12, "segment": "Laser A"}
    for item, scores, at, extra in answers:
        fields = {**laser, **extra} if item >= 10 else extra
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                *scores, item_id=item, member_id=member, submitted_at=at, updated_at=at, **fields
            ),
        )
    register = Register(pool, portal=member)
    answered = (await register.sale(801, 611, responsible_id=7))[DEAL_SURVEY]
    unanswered = (await register.sale(802, 612, responsible_id=5))[DEAL_SURVEY]
    await register.tick()
    register.later(hours=2)
    await register.answered(answered)
    register.later(days=3)
    await register.tick()  # the reminder of 802
    register.later(days=2)
    await register.tick()  # 802 unanswered: its call task
    await register.written(unanswered, "call_task", 0, entity_id=7001)
    # The same customer buys a laser: asked about it (not about the sale again, so soon).
    awaiting = (await register.sale(803, 611, responsible_id=7, products=(LASER_PRODUCT,)))[
        LASER_SURVEY
    ]
    await register.tick()
    register.later(hours=1)
    await register.opened(awaiting)
    return {"answered": answered, "awaiting": awaiting, "unanswered": unanswered}


async def seed_followups(pool: asyncpg.Pool, member: str) -> dict[str, int]:
    """Dispatch's follow-up (its own code, on a sandbox portal, the example YAML's SLAs) of three
    leads and tasks of manager 7 made ten days ago: a service lead closed within an hour, one
    nobody touched (overdue, its escalation task created by crm_sync, followed itself and
    overdue too: nobody closed it by its deadline) and the head of sales' task taken in work but
    never closed (overdue, its escalation queued). The entities' ids by name."""
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    followed = Followed(pool, example_config(), created, portal=member)
    made = {
        "closed": await followed.created("service", manager=7),
        "untouched": await followed.created("service", manager=7),
        "task": await followed.created("task", manager=7),
    }
    followed.at(created + timedelta(hours=1))
    followed.handle(made["closed"], "closed")
    followed.handle(made["task"], "in_work")
    await followed.tick(created + timedelta(hours=1, minutes=5))
    await followed.tick(created + timedelta(days=7))  # both deadlines passed: read, escalated
    await followed.escalation_created(made["untouched"])
    return {name: written.entity_id or 0 for name, written in made.items()}


def _read_token(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> str:
    """The token `nps run reports` prints on stdout when REPORTS_TOKEN is not set."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            found = TOKEN_LINE.search(seen)
            if found:
                return found.group(1).decode()
    raise AssertionError(f"no generated token on stdout (exit {proc.poll()}): {seen!r}")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the reports app exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s")


class Served:
    def __init__(
        self,
        base: str,
        token: str,
        portal: str,
        log: Path,
        asked: dict[str, uuid.UUID],
        followed: dict[str, int],
    ) -> None:
        self.base = base
        self.token = token
        self.portal = portal
        self.log = log
        self.asked = asked
        self.followed = followed

    def url(self, path: str, **params: str) -> str:
        """A page address as a person first opens it: with the token once, and the filters."""
        return (
            f"{self.base}{path}?{urlencode({'token': self.token, 'portal': self.portal, **params})}"
        )

    def api(self, **params: str) -> list[dict[str, Any]]:
        return self._get("report", **params)

    def scores(self, **params: str) -> dict[str, str]:
        """The score distribution of `/api/scores`, as a page shows it."""
        return shown_scores(self._get("scores", **params))

    def _get(self, what: str, **params: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.base}/api/{what}",
            params={"portal": self.portal, **params},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows


@pytest.fixture(scope="module")
def portal_port() -> int:
    """Where the frame test's sandbox portals (and their OAuth server) listen: the reports app
    checks a frame's user token with that OAuth server, so it is told before it starts."""
    return free_port()


@pytest.fixture(scope="module")
async def served(
    pg_dsn: str,
    amqp_url: str,
    pool: asyncpg.Pool,
    tmp_path_factory: pytest.TempPathFactory,
    portal_port: int,
) -> AsyncIterator[Served]:
    portal = f"m-e2e-{uuid.uuid4().hex[:10]}"
    asked = await seed(pool, portal)
    followed = await seed_followups(pool, portal)
    workdir = tmp_path_factory.mktemp("reports")
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REPORTS_", "BITRIX24_"))
    }
    env.update(
        {
            "DATABASE_URL": pg_dsn,
            "RABBITMQ_URL": amqp_url,
            "REPORTS_HOST": "127.0.0.1",
            "REPORTS_PORT": str(port),
            "BITRIX24_WEBHOOK_URL": WEBHOOK,
            "BITRIX24_OAUTH_URL": f"http://127.0.0.1:{portal_port}",
            "BITRIX24_CLIENT_ID": CLIENT_ID,
            "BITRIX24_CLIENT_SECRET": CLIENT_SECRET,
            "NPS_CONFIG": str(ROOT / "config" / "portal.example.yaml"),
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
    )
    log = workdir / "reports.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "reports"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        token = _read_token(proc)
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(f"{base}/healthz", proc)
        yield Served(base, token, portal, log, asked, followed)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    return Browser(tmp_path_factory.mktemp("chromium-profile"))


def test_a_browser_without_the_token_is_asked_for_it(served: Served, browser: Browser) -> None:
    address = f"{served.base}/products?portal={served.portal}"
    dom = browser.dom(address)
    assert figures(dom) == {}
    assert "LASER" not in dom
    challenge = httpx.get(address)
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].startswith("Basic ")
    assert "This dashboard needs the reports token" in challenge.text
    assert served.token not in served.log.read_text()


def test_a_browser_signs_in_with_the_token_as_password(served: Served, browser: Browser) -> None:
    signed_in = served.base.replace("http://", f"http://marketing:{served.token}@")
    shown_rows = figures(browser.dom(f"{signed_in}/managers?portal={served.portal}"))
    assert set(shown_rows) == {"5", "7", "none", "scores"}


def test_trend_view_shows_the_api_numbers(served: Served, browser: Browser) -> None:
    shown_rows = figures(browser.dom(served.url("/")))
    monthly = served.api(by="period", period="month")
    assert [row["period"] for row in monthly] == ["2024-03", "2024-04", "2024-05"]
    for row in monthly:
        assert shown_rows[row["period"]] == shown(row)
    assert shown_rows["summary"] == shown(served.api(by="period", period="range")[0])
    assert shown_rows["summary"]["few_answers"] == "unreliable: 2 answers"
    assert shown_rows["scores"] == served.scores(by="period")


def test_products_view_shows_the_api_numbers(served: Served, browser: Browser) -> None:
    dom = browser.dom(served.url("/products"))
    rows = served.api(by="product")
    shown_rows = figures(dom)
    assert shown_rows.pop("scores") == served.scores(by="product")
    assert shown_rows == {row["sku"]: shown(row) for row in rows}
    assert dom.count('class="spark"') == len(rows) == 3


def test_managers_view_shows_the_api_numbers(served: Served, browser: Browser) -> None:
    rows = served.api(by="manager")
    assert [row["manager_id"] for row in rows] == [5, 7, None]
    dom = browser.dom(served.url("/managers"))
    assert ">Maria Lebedeva</a>" in dom
    assert ">user 5</a>" in dom
    assert [row["manager_name"] for row in rows] == [None, "Maria Lebedeva", None]
    shown_rows = figures(dom)
    assert shown_rows.pop("scores") == served.scores(by="manager")
    assert shown_rows == {
        str(row["manager_id"]) if row["manager_id"] else "none": shown(row) for row in rows
    }


def test_attention_view_links_to_bitrix24(served: Served, browser: Browser) -> None:
    dom = browser.dom(served.url("/attention"))
    rows = figures(dom)
    assert [key for key in rows if key != "summary"] == [
        f"{served.portal}:2:SERUM",
        f"{served.portal}:10:LASER",
    ]
    assert rows[f"{served.portal}:10:LASER"] == {
        "score": "1",
        "contact_id": "611",
        "comment": "<b>laser broke</b>",
    }
    assert 'href="https://acme.bitrix24.ru/crm/type/1038/details/10/"' in dom
    assert "w3bh00k" not in dom


def test_all_ratings_lists_every_answer_and_exports_them(served: Served, browser: Browser) -> None:
    dom = browser.dom(served.url("/ratings"))
    rows = figures(dom)
    answers = {key: row for key, row in rows.items() if key.startswith(served.portal)}
    assert list(answers) == [
        f"{served.portal}:3:CREAM",
        f"{served.portal}:3:SERUM",
        f"{served.portal}:11:LASER",
        f"{served.portal}:2:SERUM",
        f"{served.portal}:10:LASER",
        f"{served.portal}:1:CREAM",
        f"{served.portal}:1:SERUM",
    ]
    assert answers[f"{served.portal}:2:SERUM"]["manager"] == "Maria Lebedeva"
    assert answers[f"{served.portal}:10:LASER"] == {
        "sent": "—",  # a form filled in the portal: no survey was sent
        "survey": "Laser A",
        "item": "item 10",
        "product": "laser (LASER)",
        "score": "1",
        "category": "detractorservice request",
        "comment": "<b>laser broke</b>",
        "manager": "user 5",
        "contact_id": "611",
    }
    assert rows["theme-quality"] == {"answers": "1"}
    assert 'href="https://acme.bitrix24.ru/crm/type/1038/details/10/"' in dom
    broken = figures(browser.dom(served.url("/ratings", theme="quality", category="detractor")))
    assert [key for key in broken if key.startswith(served.portal)] == [f"{served.portal}:10:LASER"]
    export = httpx.get(
        f"{served.base}/ratings.csv",
        params={"portal": served.portal, "q": "LASER BROKE"},
        headers={"Authorization": f"Bearer {served.token}"},
    )
    assert export.status_code == 200, export.text
    lines = export.content.decode("utf-8-sig").splitlines()
    assert len(lines) == 2
    assert "<b>laser broke</b>" in lines[1]


def test_asked_view_shows_who_did_not_answer_and_exports_them(
    served: Served, browser: Browser
) -> None:
    dom = browser.dom(served.url("/asked"))
    rows = figures(dom)
    assert rows["asked"] == {
        "sent": "3",
        "opened": "2",
        "open_rate": "66.7 %",
        "answered": "1",
        "answer_rate": "33.3 %",
        "awaiting": "1",
        "unanswered": "1",
    }
    assert rows["manager-7"]["answer_rate"] == "50.0 %"
    assert ">Maria Lebedeva</a>" in dom
    awaiting, unanswered = (str(served.asked[key]) for key in ("awaiting", "unanswered"))
    assert rows[awaiting]["survey"] == f"{LASER_SURVEY}EQ-LASER-A"
    assert rows[awaiting]["next_reminder"] == "2026-12-15 12:00 UTC"
    assert rows[unanswered]["call_task"] == "created"
    assert rows[unanswered]["task_id"] == "task 7001"
    assert 'href="https://acme.bitrix24.ru/company/personal/user/5/tasks/task/view/7001/"' in dom
    assert str(served.asked["answered"]) not in rows
    laser = figures(browser.dom(served.url("/asked", segment=LASER_SURVEY)))
    assert laser["asked"]["sent"] == "1"
    assert f"survey-{DEAL_SURVEY}" not in laser
    export = httpx.get(
        f"{served.base}/asked.csv",
        params={"portal": served.portal},
        headers={"Authorization": f"Bearer {served.token}"},
    )
    assert export.status_code == 200, export.text
    lines = export.content.decode("utf-8-sig").splitlines()
    assert len(lines) == 4
    assert sum("awaiting answer" in line for line in lines) == 1


def test_followup_view_shows_who_acted_and_exports_the_overdue_ones(
    served: Served, browser: Browser
) -> None:
    dom = browser.dom(served.url("/followup"))
    rows = figures(dom)
    assert {key: rows["loop"][key] for key in ("followed", "closed", "closed_pct", "overdue")} == {
        "followed": "4",
        "closed": "1",
        "closed_pct": "25.0 %",
        "overdue": "3",
    }
    assert rows["action-service"]["sla"] == "4 working h to act"
    assert rows["action-service"]["closed_pct"] == "50.0 %"
    assert rows["action-task"]["sla"] == "24 h to close"
    assert rows["action-escalation"]["sla"] == "4 h to close"
    assert rows["manager-7"]["followed"] == "4"
    assert ">Maria Lebedeva</a>" in dom
    assert rows["overdue-total"] == {"total": "3"}
    lead, task = served.followed["untouched"], served.followed["task"]
    overdue = {row["entity"]: row for row in rows.values() if "entity" in row}
    assert overdue[f"lead {lead}"]["escalation"] == "task created for user 17"
    escalation_task = overdue[f"lead {lead}"]["escalation_task"]
    assert escalation_task.startswith("task ")
    assert set(overdue) == {f"lead {lead}", f"task {task}", escalation_task}
    assert overdue[escalation_task]["escalation"] == "none: it is the escalation"
    assert overdue[f"task {task}"]["escalation"] == (
        "queued for user 17 (crm_sync is creating the task)"
    )
    assert f'href="https://acme.bitrix24.ru/crm/lead/details/{lead}/"' in dom
    assert f'href="https://acme.bitrix24.ru/company/personal/user/5/tasks/task/view/{task}/"' in dom
    tasks = figures(browser.dom(served.url("/followup", action="task")))
    assert tasks["loop"]["followed"] == "1"
    overview = figures(browser.dom(served.url("/")))
    assert overview["followup"] == {"overdue": "3"}
    export = httpx.get(
        f"{served.base}/followup.csv",
        params={"portal": served.portal},
        headers={"Authorization": f"Bearer {served.token}"},
    )
    assert export.status_code == 200, export.text
    lines = export.content.decode("utf-8-sig").splitlines()
    assert sorted(line.split(",")[1] for line in lines[1:]) == sorted(
        [f"lead {lead}", f"task {task}", escalation_task]
    )


def test_ops_view_shows_conflicts_and_dead_letters(served: Served, browser: Browser) -> None:
    dom = browser.dom(served.url("/ops"))
    assert dom.index("<h2>Dead letters</h2>") < dom.index("<h2>Conflicts</h2>")
    rows = figures(dom)
    assert rows["conflicts"] == {"total": "0"}
    assert rows["crm_sync.actions"]["size"].isdigit()
    assert rows["scoring.submissions"]["size"].isdigit()


def test_changing_a_filter_changes_the_numbers(served: Served, browser: Browser) -> None:
    everything = figures(browser.dom(served.url("/products")))
    lasers = figures(browser.dom(served.url("/products", segment="12")))
    assert set(everything) == {"CREAM", "LASER", "SERUM", "scores"}
    assert lasers == {
        "LASER": shown(served.api(by="product", segment="12")[0]),
        "scores": served.scores(by="product", segment="12"),
    }
    weekly = figures(browser.dom(served.url("/", period="week", product="SERUM")))
    rows = served.api(by="period", period="week", product="SERUM")
    assert len(rows) == 12
    for row in rows:
        assert weekly[row["period"]] == shown(row)


def test_a_date_range_is_compared_with_the_one_before(served: Served, browser: Browser) -> None:
    dates = {"from": "2024-04-01", "to": "2024-05-31"}
    shown_rows = figures(browser.dom(served.url("/", **dates)))
    [now] = served.api(by="period", **dates)
    [before] = served.api(by="period", **{"from": "2024-01-31", "to": "2024-03-31"})
    assert shown_rows["summary"] == shown(now)
    assert shown_rows["change"]["answers"] == f"{now['answers'] - before['answers']:+d}"
    assert shown_rows["change"]["previous_answers"] == str(before["answers"])
    preset = browser.dom(served.url("/", dates="quarter"))
    assert '<option value="quarter" selected="">this quarter</option>' in preset
    assert "change" in figures(preset)


def test_screenshots_are_saved(served: Served, browser: Browser) -> None:
    views: tuple[tuple[str, str, dict[str, str]], ...] = (
        ("trend", "/", {}),
        ("trend-range", "/", {"from": "2024-04-01", "to": "2024-05-31", "period": "day"}),
        ("products", "/products", {}),
        ("managers", "/managers", {}),
        ("attention", "/attention", {}),
        ("ratings", "/ratings", {}),
        ("asked", "/asked", {}),
        ("followup", "/followup", {}),
        ("ops", "/ops", {}),
    )
    for name, path, params in views:
        shot = ARTIFACTS / f"dashboard-{name}.png"
        browser.screenshot(served.url(path, **params), shot)
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{shot} is not a PNG"
        assert len(data) > 10_000, f"{shot} looks blank ({len(data)} bytes)"


# --- inside a portal ------------------------------------------------------------------------

CLIENT_ID = "local.nps.e2e"
CLIENT_SECRET = "e2e-app-secret"


class Framed:
    """Two sandbox portals with the application installed; the reports app's frame sessions
    of an administrator of the first, with answers of both portals in the database."""

    def __init__(self, base: str, session: str, other_member: str) -> None:
        self.base = base
        self.session = session
        self.other_member = other_member

    def url(self, path: str, **params: str) -> str:
        return f"{self.base}{path}?{urlencode({'s': self.session, **params})}"


@pytest.fixture(scope="module")
async def framed(
    served: Served, pg_dsn: str, amqp_url: str, pool: asyncpg.Pool, portal_port: int
) -> Framed:
    """The sandbox's portals over HTTP install the application (`serve_app`, what `nps run app`
    runs); the first portal's administrator opens it: the portal's POST to the reports app's
    `/frame`, as the portal's iframe sends it."""
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    sandbox = Sandbox(
        SandboxPortal(limits=Limits.off()),
        registration=app_registration(
            CLIENT_ID, CLIENT_SECRET, handler_url=f"{served.base}/frame", app=app_url
        ),
    )
    names = two_names()
    for name in names:
        sandbox.add(PortalSpec(name=name, limits=Limits.off()))
    members = [sandbox.named[name].portal.member_id for name in names]
    for item, (member, sku, score, comment) in enumerate(
        [
            (members[0], "COS-SERUM", 10, "alpha liked the serum"),
            (members[0], "COS-SERUM", 4, "alpha found it sticky"),
            (members[1], "COS-CREAM", 9, "beta only comment"),
        ],
        1,
    ):
        submission = make_submission(
            (sku, score),
            item_id=item,
            member_id=member,
            submitted_at="2024-05-02T10:00:00+03:00",
            comment=comment,
        )
        await score_submission(pool, Outbox(), submission)
    async with serving(create_sandbox_app(sandbox), portal_port) as portal_url:
        assert sandbox.server is not None
        sandbox.server.base_url = portal_url
        settings = Settings(
            rabbitmq_url=amqp_url,
            database_url=pg_dsn,
            nps_config=ROOT / "config" / "portal.example.yaml",
            bitrix24_webhook_url=None,
            bitrix24_app_token=None,
            bitrix24_oauth_url=portal_url,
            bitrix24_client_id=CLIENT_ID,
            bitrix24_client_secret=SecretStr(CLIENT_SECRET),
            _env_file=None,
        )
        async with (
            app_service(settings, app_port, portal_url),
            httpx.AsyncClient(base_url=portal_url, timeout=60) as http,
        ):
            for name, member in zip(names, members, strict=True):
                installed = await http.post(f"/p/{name}/sandbox/install", json={})
                assert installed.status_code == 200, installed.text
                await until_row(pool, member, "status", "installed", timeout_s=30)
            form = (await http.get(f"/p/{names[0]}/sandbox/frame")).json()
            assert form["url"] == f"{served.base}/frame"
            entry = await http.post(form["action"], data=form["body"])
            assert entry.status_code == 303, entry.text
            session = entry.headers["location"].removeprefix("/?s=")
    return Framed(served.base, session, members[1])


def test_the_frame_shows_its_portal_only_in_the_browser(framed: Framed, browser: Browser) -> None:
    ratings = browser.dom(framed.url("/ratings"))
    assert "alpha found it sticky" in ratings
    assert "beta only comment" not in ratings
    assert framed.other_member not in ratings
    products = browser.dom(framed.url("/products"))
    assert "COS-SERUM" in products
    assert "COS-CREAM" not in products
    # A link of the page, followed in the browser, keeps the session.
    link = re.search(r'href="(/managers\?[^"]*)"', products)
    assert link is not None
    assert "s=" in link.group(1)
    managers = browser.dom(framed.base + link.group(1).replace("&amp;", "&"))
    assert 'class="on">Managers</a>' in managers
    refused = browser.dom(framed.url("/ratings", portal=framed.other_member))
    assert "beta only comment" not in refused
    assert "this session reads its own portal only" in refused


def test_the_settings_page_in_the_browser(framed: Framed, browser: Browser) -> None:
    page = browser.dom(framed.url("/settings"))
    assert "<textarea" in page
    assert "the deployment's portal YAML (its template)" in page
    assert "<button" in page
    for name, url in (
        ("frame-ratings", framed.url("/ratings")),
        ("frame-settings", framed.url("/settings")),
    ):
        shot = ARTIFACTS / f"dashboard-{name}.png"
        browser.screenshot(url, shot)
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{shot} is not a PNG"
        assert len(data) > 10_000, f"{shot} looks blank ({len(data)} bytes)"
