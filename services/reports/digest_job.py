"""The weekly digest at work (docs/dashboard.md, The weekly digest): in the reports process, a
timer that sends the edition due, once. The figures come from the read modules, as the
dashboard's do: the NPS of the two weeks from scoring's report (`run_report`, the same numbers
as the dashboard's trend), the worst comments from its all-ratings list, the overdue follow-ups
from dispatch, the responsibles' names from ingest. The e-mail goes out through the shared SMTP
sender on the `DISPATCH_SMTP_*` settings.

Once per edition: the row `reports_digests` (portal, edition) is claimed `sending` before the
message goes out and marked `sent` (or `failed` for good) after; another replica or a restart
finds it. A claim older than the lease is taken for a crash and tried again (so, as with
dispatch's sends, a crash right after the SMTP server accepted the message may send it twice,
with the same Message-ID); an unreachable server is tried again after `RETRY`.

In application mode (`installed_digests`) each installed portal whose own stored configuration
(`portal_configs`) asks for a digest gets one, about its own data only, to its own recipients;
the deployment's portal YAML (the template of portals without one) never sends a portal's
figures to its recipients. The portals and their configurations are read again every round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import asyncpg

from services.dispatch import read as dispatch_read
from services.ingest.read import user_names
from services.reports.digest import (
    DigestContent,
    Edition,
    Figures,
    build_digest,
    due,
    edition,
    overdue_items,
    worst_comments,
)
from services.scoring.read import RatingsQuery, ReportQuery, all_ratings, run_report
from shared import portal_store
from shared.bitrix24.tokens import app_portals
from shared.db import Conn
from shared.dispatch_config import Digest
from shared.events import utcnow
from shared.logging import get_logger
from shared.portal_config import ConfigError, PortalConfig
from shared.served_portal import reading_key
from shared.smtp import MailerUnavailableError, MessageRejectedError

log = get_logger(__name__)
Clock = Callable[[], datetime]
Outcome = Literal["sent", "failed", "deferred"]
RETRY = timedelta(minutes=5)
OVERDUE_LISTED = 20
"""Overdue follow-ups the digest lists (it counts them all)."""
COMMENT_SCAN = 2_000
"""Answers with a comment looked at for the worst ones: the week's detractors' (then passives',
then promoters' while too few), newest first."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class DigestJob:
    def __init__(
        self,
        pool: asyncpg.Pool,
        config: PortalConfig,
        mailer: Mailer,
        *,
        min_answers: int,
        clock: Clock = utcnow,
        lease: timedelta = timedelta(minutes=10),
        portal: str | None = None,
    ) -> None:
        """`portal`: the installed portal's member_id in application mode; None: the portal
        `portal.member_id` pins, else the one ingest learned."""
        dispatch = config.dispatch
        self._digest: Digest | None = None if dispatch is None else dispatch.digest
        self._lang = "ru"
        self._sender = ""
        if dispatch is not None and self._digest is not None:
            self._lang = self._digest.language or dispatch.language
            email = dispatch.email
            self._sender = self._digest.sender or (email.sender if email else "")
        self._pool = pool
        self._member = portal or config.portal.member_id
        """The installed portal, or the one pinned by `portal.member_id` (None: the portal
        ingest learned from the first event is read)."""
        self._portal = self._member or "default"
        self._tz = ZoneInfo(config.portal.timezone)
        self._mailer = mailer
        self._min_answers = min_answers
        self._clock = clock
        self._lease = lease

    @property
    def configured(self) -> bool:
        return self._digest is not None

    @property
    def portal(self) -> str:
        """The key of its `reports_digests` rows (and of its log lines)."""
        return self._portal

    async def tick(self, now: datetime | None = None) -> Outcome | None:
        """Send the edition due at `now`, if it is not sent (or being sent) already."""
        digest = self._digest
        if digest is None:
            return None
        now = now or self._clock()
        ed = edition(now, digest, self._tz)
        if not due(now, ed):
            return None
        async with self._pool.acquire() as conn:
            if not await self._claim(conn, ed, len(digest.to), now):
                return None
            content = await self._content(conn, ed, now)
        message = build_digest(
            content, digest, sender=self._sender, portal=self._portal, tz=self._tz
        )
        try:
            await self._mailer.send(message)
        except MessageRejectedError as exc:
            await self._finish(ed, "failed", f"the SMTP server refused the digest: {exc}", now)
            log.warning("digest_failed", portal=self._portal, edition=ed.day.isoformat())
            return "failed"
        except MailerUnavailableError as exc:
            await self._defer(ed, str(exc), now)
            log.warning("digest_deferred", portal=self._portal, edition=ed.day.isoformat())
            return "deferred"
        await self._finish(ed, "sent", None, now)
        log.info(
            "digest_sent",
            portal=self._portal,
            edition=ed.day.isoformat(),
            recipients=len(digest.to),
            answers=content.week.answers,
            overdue=content.overdue_total,
        )
        return "sent"

    async def _claim(self, conn: Conn, ed: Edition, recipients: int, now: datetime) -> bool:
        claimed = await conn.fetchval(
            """INSERT INTO reports_digests AS d (portal, edition, state, recipients, started_at)
               VALUES ($1, $2, 'sending', $3, $4)
               ON CONFLICT (portal, edition) DO UPDATE
                   SET started_at = EXCLUDED.started_at, attempts = d.attempts + 1
                   WHERE d.state = 'sending' AND d.started_at <= $5
               RETURNING true""",
            self._portal,
            ed.day,
            recipients,
            now,
            now - self._lease,
        )
        return bool(claimed)

    async def _finish(self, ed: Edition, state: str, reason: str | None, now: datetime) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE reports_digests SET state = $3, reason = $4, finished_at = $5
                   WHERE portal = $1 AND edition = $2""",
                self._portal,
                ed.day,
                state,
                reason,
                now,
            )

    async def _defer(self, ed: Edition, reason: str, now: datetime) -> None:
        """Leave the claim to lapse `RETRY` from now (the SMTP server is unreachable)."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE reports_digests SET started_at = $3, reason = $4
                   WHERE portal = $1 AND edition = $2 AND state = 'sending'""",
                self._portal,
                ed.day,
                now - self._lease + RETRY,
                reason,
            )

    async def _content(self, conn: Conn, ed: Edition, now: datetime) -> DigestContent:
        assert self._digest is not None
        portal = await reading_key(conn, None, self._member)
        week = await self._figures(conn, portal, ed.start, ed.end)
        previous = await self._figures(conn, portal, ed.previous_start, ed.previous_end)
        comments: list[dict[str, Any]] = []
        for category in ("detractor", "passive", "promoter"):
            if len(comments) >= self._digest.comments:
                break
            query = RatingsQuery(
                portal=portal,
                start=ed.start,
                end=ed.end,
                category=category,
                has_comment=True,
            )
            async for row in all_ratings(conn, query):
                comments.append(row)
                if len(comments) >= COMMENT_SCAN:
                    break
        where = dispatch_read.FollowupFilter(portal=portal)
        overdue = await dispatch_read.overdue(conn, now, where, limit=OVERDUE_LISTED)
        total = await dispatch_read.overdue_count(conn, now, where)
        names = await user_names(conn, portal) if overdue else {}
        return DigestContent(
            edition=ed,
            lang=self._lang,
            week=week,
            previous=previous,
            comments=worst_comments(comments, self._digest.comments),
            overdue=overdue_items(overdue, names),
            overdue_total=total,
        )

    async def _figures(self, conn: Conn, portal: str | None, start: date, end: date) -> Figures:
        query = ReportQuery(
            by="period", period="range", date_from=start, date_to=end, portal=portal
        )
        rows = await run_report(conn, query)
        return Figures.of(rows[0].as_dict(self._min_answers) if rows else None)


Jobs = Callable[[], Awaitable[Sequence[DigestJob]]]
"""The digests of this round: the one portal's, or each installed portal's (`installed_digests`)."""


async def installed_digests(
    pool: asyncpg.Pool, mailer: Mailer, *, min_answers: int, clock: Clock = utcnow
) -> list[DigestJob]:
    """Application mode: one job per installed portal whose own stored configuration asks for a
    digest (a portal without one has none: the template's recipients are the deployment's); a
    stored configuration that no longer validates is logged and that portal skipped."""
    jobs = []
    async with pool.acquire() as conn:
        for portal in await app_portals(conn):
            if portal.status != "installed":
                continue
            try:
                stored = await portal_store.load(conn, portal.member_id)
            except ConfigError as exc:
                log.error("digest_portal_config_invalid", portal=portal.member_id, error=str(exc))
                continue
            if stored is None:
                continue
            job = DigestJob(
                pool,
                stored.config,
                mailer,
                min_answers=min_answers,
                clock=clock,
                portal=portal.member_id,
            )
            if job.configured:
                jobs.append(job)
    return jobs


async def run_digest(jobs: Jobs, stop: asyncio.Event, every_s: float = 60.0) -> None:
    """Look for each digest's due edition every `every_s` until `stop` is set; one portal's
    failure leaves the others' digests alone."""
    while not stop.is_set():
        try:
            current = await jobs()
        except Exception:  # the next round reads the portals again
            log.exception("digest_portals_read_failed")
            current = []
        for job in current:
            try:
                await job.tick()
            except Exception:  # the next round tries again; the claim lapses after the lease
                log.exception("digest_tick_failed", portal=job.portal)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
