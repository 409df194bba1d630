"""Dispatch's SQL: the register `dispatch_requests`, `dispatch_sends`, `dispatch_optouts`,
`dispatch_campaigns` (migrations/0600_dispatch.sql). Only dispatch writes them; others read
through `services/dispatch/read.py`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.dispatch.plan import ContactHistory, Progress, Wanted
from shared.db import Conn
from shared.events import RequestState

COLUMNS = """request_id, portal, source, ref, survey, kind, category_id, sku, contact_id,
    company_id, responsible_id, sale_deal_id, nps_deal_id, lang, channel, state, reason,
    link_url, optout_url, company, logo_url, expires_at, sends, due_at, created_at, sent_at,
    last_sent_at, opened_at, answered_at, closed_at, call_task_id, updated_at, robot_token,
    send_after"""


@dataclass(frozen=True)
class Request:
    """A row of the register."""

    request_id: uuid.UUID
    portal: str
    source: str
    ref: str
    survey: str
    kind: str
    category_id: int
    sku: str | None
    contact_id: int
    company_id: int | None
    responsible_id: int | None
    sale_deal_id: int | None
    nps_deal_id: int | None
    lang: str
    channel: str
    state: RequestState
    reason: str | None
    link_url: str | None
    optout_url: str | None
    company: str | None
    logo_url: str | None
    expires_at: datetime | None
    sends: int
    due_at: datetime | None
    created_at: datetime
    sent_at: datetime | None
    last_sent_at: datetime | None
    opened_at: datetime | None
    answered_at: datetime | None
    closed_at: datetime | None
    call_task_id: int | None
    updated_at: datetime
    robot_token: str | None
    """The robot launch's event_token (a request the robot asked for), answered once."""
    send_after: datetime | None
    """The robot's delay: the first message goes out no earlier."""

    @classmethod
    def of(cls, row: Any) -> Request:
        return cls(**dict(row))

    def progress(self, sending: bool) -> Progress:
        return Progress(
            state=self.state,
            link_ready=self.link_url is not None,
            sends=self.sends,
            last_sent_at=self.last_sent_at,
            expires_at=self.expires_at,
            sending=sending,
            send_after=self.send_after,
        )


async def lock_contact(conn: Conn, portal: str, contact_id: int) -> None:
    """Serialize the decisions about one contact (two sales closed at once ask once)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('dispatch:' || $1 || ':' || $2, 0))",
        portal,
        str(contact_id),
    )


async def contact_history(conn: Conn, portal: str, contact_id: int, survey: str) -> ContactHistory:
    row = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM dispatch_optouts
                          WHERE portal = $1 AND contact_id = $2) AS opted_out,
                  (SELECT max(created_at) FROM dispatch_requests
                   WHERE portal = $1 AND contact_id = $2 AND survey = $3
                     AND state NOT IN ('skipped', 'failed')) AS last_asked_at""",
        portal,
        contact_id,
        survey,
    )
    assert row is not None
    return ContactHistory(opted_out=row["opted_out"], last_asked_at=row["last_asked_at"])


async def insert_request(
    conn: Conn,
    portal: str,
    wanted: Wanted,
    *,
    state: RequestState,
    reason: str | None,
    now: datetime,
) -> Request | None:
    """Add the request; None when the trigger asked for it already (it is one row)."""
    row = await conn.fetchrow(
        f"""INSERT INTO dispatch_requests
               (request_id, portal, source, ref, survey, kind, category_id, sku, contact_id,
                company_id, responsible_id, sale_deal_id, lang, channel, state, reason,
                created_at, updated_at, closed_at, robot_token, send_after)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                   $17, $17, CASE WHEN $15::text = 'skipped' THEN $17::timestamptz END,
                   $18, $19)
           ON CONFLICT DO NOTHING
           RETURNING {COLUMNS}""",  # noqa: S608 - fixed column list, values are $n
        uuid.UUID(wanted.request_id(portal)),
        portal,
        wanted.source,
        wanted.ref,
        wanted.survey,
        wanted.kind,
        wanted.category_id,
        wanted.sku,
        wanted.contact_id or 0,
        wanted.company_id,
        wanted.responsible_id,
        wanted.sale_deal_id,
        wanted.lang,
        wanted.channel,
        state,
        reason,
        now,
        wanted.robot_token,
        wanted.send_after,
    )
    return None if row is None else Request.of(row)


async def get(conn: Conn, request_id: uuid.UUID, *, lock: bool = False) -> Request | None:
    lock_clause = " FOR UPDATE" if lock else ""
    sql = f"SELECT {COLUMNS} FROM dispatch_requests WHERE request_id = $1{lock_clause}"  # noqa: S608
    row = await conn.fetchrow(sql, request_id)
    return None if row is None else Request.of(row)


async def update(conn: Conn, request_id: uuid.UUID, now: datetime, **values: Any) -> Request:
    """Set `values` on the request (and `updated_at`); the row as it is now."""
    names = list(values)
    sets = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(names))
    row = await conn.fetchrow(
        f"""UPDATE dispatch_requests SET {sets}, updated_at = $2 WHERE request_id = $1
            RETURNING {COLUMNS}""",  # noqa: S608 - column names from the code, values are $n
        request_id,
        now,
        *(values[name] for name in names),
    )
    assert row is not None, f"request {request_id} vanished"
    return Request.of(row)


async def due(
    conn: Conn, now: datetime, limit: int, portals: tuple[str, ...] | None
) -> list[Request]:
    """Requests due at `now` of the portals served (None: the one portal served, whichever),
    locked for this transaction (other replicas skip them)."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM dispatch_requests
            WHERE due_at <= $1 AND ($3::text[] IS NULL OR portal = ANY($3::text[]))
            ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""",  # noqa: S608
        now,
        limit,
        None if portals is None else list(portals),
    )
    return [Request.of(row) for row in rows]


async def sending(conn: Conn, request_id: uuid.UUID, lease: timedelta, now: datetime) -> bool:
    """Whether a send of the request is in flight: a portal send crm_sync has not confirmed,
    or an e-mail another process started less than `lease` ago."""
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM dispatch_sends
                          WHERE request_id = $1 AND state = 'sending'
                            AND (channel = 'portal' OR started_at > $2))""",
        request_id,
        now - lease,
    )
    return found


async def start_send(
    conn: Conn, request_id: uuid.UUID, n: int, channel: str, now: datetime
) -> None:
    """Record send `n` before the message goes out (again, after a crash: `started_at` moves)."""
    await conn.execute(
        """INSERT INTO dispatch_sends (request_id, n, channel, state, started_at)
           VALUES ($1, $2, $3, 'sending', $4)
           ON CONFLICT (request_id, n) DO UPDATE SET started_at = EXCLUDED.started_at
           WHERE dispatch_sends.state = 'sending'""",
        request_id,
        n,
        channel,
        now,
    )


async def reclaim_send(
    conn: Conn, request_id: uuid.UUID, n: int, *, claimed_at: datetime, now: datetime
) -> bool:
    """Renew the lease of send `n` right before its message goes out, if it is still the one
    this process claimed at `claimed_at`; False when another process took it over since (its
    lease ran out while earlier messages of a slow round went out)."""
    renewed = await conn.fetchval(
        """UPDATE dispatch_sends SET started_at = $4
           WHERE request_id = $1 AND n = $2 AND state = 'sending' AND started_at = $3
           RETURNING true""",
        request_id,
        n,
        claimed_at,
        now,
    )
    return bool(renewed)


async def finish_send(
    conn: Conn, request_id: uuid.UUID, n: int, *, state: str, reason: str | None, now: datetime
) -> bool:
    """Record send `n`'s outcome; False when it was recorded already (a redelivery)."""
    done = await conn.fetchval(
        """UPDATE dispatch_sends SET state = $3, reason = $4, finished_at = $5
           WHERE request_id = $1 AND n = $2 AND state = 'sending' RETURNING true""",
        request_id,
        n,
        state,
        reason,
        now,
    )
    return bool(done)


async def opt_out(
    conn: Conn, portal: str, contact_id: int, request_id: uuid.UUID, at: datetime
) -> bool:
    """Record the contact's opt-out; False when it was recorded already."""
    done = await conn.fetchval(
        """INSERT INTO dispatch_optouts (portal, contact_id, request_id, opted_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        portal,
        contact_id,
        request_id,
        at,
    )
    return bool(done)


async def open_requests_of(conn: Conn, portal: str, contact_id: int) -> list[Request]:
    """The contact's requests not done yet, locked."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM dispatch_requests
            WHERE portal = $1 AND contact_id = $2 AND closed_at IS NULL
            ORDER BY created_at FOR UPDATE""",  # noqa: S608 - fixed column list
        portal,
        contact_id,
    )
    return [Request.of(row) for row in rows]


async def add_campaign(
    conn: Conn,
    *,
    campaign_id: uuid.UUID,
    portal: str,
    name: str,
    survey: str,
    asked: int,
    skipped: int,
) -> None:
    await conn.execute(
        """INSERT INTO dispatch_campaigns (campaign_id, portal, name, survey, asked, skipped)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (campaign_id) DO UPDATE
               SET asked = dispatch_campaigns.asked + EXCLUDED.asked,
                   skipped = dispatch_campaigns.skipped + EXCLUDED.skipped""",
        campaign_id,
        portal,
        name,
        survey,
        asked,
        skipped,
    )
