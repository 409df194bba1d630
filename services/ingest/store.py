"""PostgreSQL access of the ingest service (tables of migrations `0100_ingest.sql`,
`0110_ingest_unmapped.sql`, `0120_ingest_item_revisions.sql`, `0121_ingest_sales.sql` and
`0130_ingest_offline.sql`).

Every function takes a connection and runs inside the caller's transaction, so that a stored
event and its outbox row, or a claimed message and the answer it publishes, commit together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import asyncpg

from services.ingest.mapping import Answer, NotASurvey
from services.ingest.versions import Published
from shared.db import Conn
from shared.events import FormSubmitted, PortalRef, SaleClosed, WebhookReceived
from shared.outbox import Outbox, QueuingStatement, StatementBuilder

RecordOutcome = Literal["new", "duplicate", "stale", "tie", "conflict", "redelivered"]


def _record_received_statement() -> QueuingStatement:
    b = StatementBuilder()
    values = b.params(
        "event_id",
        "portal",
        "member_id",
        "domain",
        "source",
        "event",
        "entity_type_id",
        "item_id",
        "ts",
        "payload",
    )
    return b.build(
        f"""WITH stored AS (
                INSERT INTO ingest_events (event_id, portal, member_id, domain, source, event,
                                           entity_type_id, item_id, ts, payload)
                VALUES ({", ".join(values[:-1])}, {values[-1]}::jsonb)
                ON CONFLICT DO NOTHING RETURNING id),
            {b.queue(after="stored")}
            SELECT EXISTS (SELECT 1 FROM stored)""",  # noqa: S608 - placeholders only
        queued_if=bool,
    )


_RECORD_RECEIVED = _record_received_statement()


async def record_received(
    outbox: Outbox, conn: Conn, event: WebhookReceived, payload: dict[str, Any]
) -> bool:
    """Store an accepted event and queue it for publishing, in one statement (no transaction
    needed); False when it is a duplicate."""
    stored: bool = await outbox.fetchval(
        conn,
        _RECORD_RECEIVED,
        [event],
        event_id=event.event_id,
        portal=event.portal.key,
        member_id=event.portal.member_id,
        domain=event.portal.domain,
        source=event.source,
        event=event.event,
        entity_type_id=event.entity_type_id,
        item_id=event.item_id,
        ts=event.ts,
        payload=json.dumps(payload, ensure_ascii=False),
    )
    return stored


async def last_version(
    conn: Conn, portal: str, entity_type_id: int, item_id: int, state: tuple[datetime, str]
) -> tuple[Published | None, bool]:
    """The last state of the item published (the greatest `updated_at`, then revision) and
    whether `state` (`updated_at`, fingerprint) was ever published, in one statement."""
    updated_at, fingerprint = state
    row = await conn.fetchrow(
        """SELECT last.updated_at, last.fingerprint, last.revision,
                  EXISTS (SELECT 1 FROM ingest_item_versions
                          WHERE portal = $1 AND entity_type_id = $2 AND item_id = $3
                            AND updated_at = $4 AND fingerprint = $5) AS known
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (SELECT updated_at, fingerprint, revision FROM ingest_item_versions
                              WHERE portal = $1 AND entity_type_id = $2 AND item_id = $3
                              ORDER BY updated_at DESC, revision DESC LIMIT 1) AS last ON true""",
        portal,
        entity_type_id,
        item_id,
        updated_at,
        fingerprint,
    )
    assert row is not None
    if row["updated_at"] is None:
        return None, bool(row["known"])
    return Published(row["updated_at"], row["fingerprint"], row["revision"]), bool(row["known"])


def _record_answer_statement() -> QueuingStatement:
    b = StatementBuilder()
    consumer, message_id, portal, entity_type_id, item_id, updated_at = b.params(
        "consumer", "message_id", "portal", "entity_type_id", "item_id", "updated_at"
    )
    revision, seen, fingerprint, event_id = b.params("revision", "seen", "fingerprint", "event_id")
    item = f"portal = {portal} AND entity_type_id = {entity_type_id} AND item_id = {item_id}"
    return b.build(
        f"""WITH last_of_second AS (
                SELECT fingerprint, revision FROM ingest_item_versions
                WHERE {item} AND updated_at = {updated_at}
                ORDER BY revision DESC LIMIT 1),
            tie AS (
                SELECT 1 FROM last_of_second
                WHERE fingerprint <> {fingerprint} AND revision IS DISTINCT FROM {seen}::integer),
            newer AS (
                SELECT 1 FROM ingest_item_versions WHERE {item} AND updated_at > {updated_at}
                LIMIT 1),
            claimed AS (
                INSERT INTO processed_messages (consumer, message_id)
                SELECT {consumer}, {message_id}::uuid WHERE NOT EXISTS (SELECT 1 FROM tie)
                ON CONFLICT DO NOTHING RETURNING 1),
            version AS (
                INSERT INTO ingest_item_versions
                    (portal, entity_type_id, item_id, updated_at, revision, fingerprint, event_id)
                SELECT {portal}, {entity_type_id}, {item_id}, {updated_at}, {revision},
                       {fingerprint}, {event_id}
                WHERE EXISTS (SELECT 1 FROM claimed) AND NOT EXISTS (SELECT 1 FROM newer)
                  AND NOT EXISTS (SELECT 1 FROM last_of_second WHERE fingerprint = {fingerprint})
                ON CONFLICT DO NOTHING RETURNING 1),
            {b.queue(after="version")}
            SELECT CASE WHEN EXISTS (SELECT 1 FROM tie) THEN 'tie'
                        WHEN NOT EXISTS (SELECT 1 FROM claimed) THEN 'redelivered'
                        WHEN EXISTS (SELECT 1 FROM newer) THEN 'stale'
                        WHEN EXISTS (SELECT 1 FROM last_of_second
                                     WHERE fingerprint = {fingerprint}) THEN 'duplicate'
                        WHEN EXISTS (SELECT 1 FROM version) THEN 'new'
                        ELSE 'conflict' END""",  # noqa: S608 - placeholders only
        queued_if=lambda outcome: outcome == "new",
    )


_RECORD_ANSWER = _record_answer_statement()


async def record_answer(
    outbox: Outbox,
    conn: Conn,
    consumer: str,
    message_id: str,
    *,
    answer: Answer,
    form: FormSubmitted,
    seen: int | None = None,
) -> RecordOutcome:
    """Claim `message_id` for `consumer`, record the state `form` publishes (its `updated_at`
    and revision) and queue `form`, in one statement (atomic without a transaction).

    `tie` (nothing claimed, nothing recorded) when the last state recorded for the same
    `updated_at` is another one and its revision is not `seen` (the one the caller decided the
    revision from, `versions.next_step`; None: none). Else `redelivered` when the message was
    handled before, `stale` when a later second was recorded, `duplicate` when this state is the
    last of its second, `conflict` when another message recorded that revision of the item
    meanwhile (the caller rolls back and retries), or `new`."""
    outcome: RecordOutcome = await outbox.fetchval(
        conn,
        _RECORD_ANSWER,
        [form],
        consumer=consumer,
        message_id=message_id,
        portal=form.portal.key,
        entity_type_id=answer.entity_type_id,
        item_id=answer.item_id,
        updated_at=answer.updated_at,
        revision=form.revision,
        seen=seen,
        fingerprint=answer.fingerprint(),
        event_id=form.event_id,
    )
    return outcome


async def learn_portal(conn: Conn, portal: PortalRef) -> tuple[str, bool]:
    """Keep `portal` as the deployment's portal unless one is kept already: the member id of the
    portal kept and whether it was learned just now. Outside a transaction, so that of two first
    events at once the loser's second statement sees the winner's row."""
    learned = await conn.fetchval(
        """INSERT INTO ingest_portal (member_id, domain) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING member_id""",
        portal.member_id,
        portal.domain,
    )
    if learned is not None:
        return str(learned), True
    kept: str = await conn.fetchval("SELECT member_id FROM ingest_portal")
    return kept, False


async def watermark(
    conn: Conn, portal: str, entity_type_id: int, scope: str = ""
) -> datetime | None:
    """The sweep's watermark of `portal`'s `entity_type_id` (`scope`: which of its sweeps; ''
    the items or deals changed, `stagehistory:<funnel>` a sales funnel's stage history)."""
    value: datetime | None = await conn.fetchval(
        """SELECT watermark FROM ingest_sweep_watermarks
           WHERE portal = $1 AND entity_type_id = $2 AND scope = $3""",
        portal,
        entity_type_id,
        scope,
    )
    return value


async def set_watermark(
    conn: Conn, portal: str, entity_type_id: int, value: datetime, scope: str = ""
) -> None:
    """Move the watermark forward (never back) and note when the sweep ran."""
    await conn.execute(
        """INSERT INTO ingest_sweep_watermarks (portal, entity_type_id, scope, watermark)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (portal, entity_type_id, scope) DO UPDATE
           SET watermark = GREATEST(ingest_sweep_watermarks.watermark, EXCLUDED.watermark),
               swept_at = now()""",
        portal,
        entity_type_id,
        scope,
        value,
    )


async def seen_items(
    conn: Conn,
    portal: str,
    entity_type_id: int,
    candidates: Sequence[tuple[int, datetime]],
) -> set[int]:
    """The candidate (item, updatedTime) pairs ingest already has: an answer published for that
    state or a later one, or an event/robot call/sweep submission received since the update."""
    if not candidates:
        return set()
    rows = await conn.fetch(
        """SELECT c.item_id FROM unnest($3::bigint[], $4::timestamptz[]) AS c(item_id, updated_at)
           WHERE EXISTS (SELECT 1 FROM ingest_item_versions v
                         WHERE v.portal = $1 AND v.entity_type_id = $2
                           AND v.item_id = c.item_id AND v.updated_at >= c.updated_at)
              OR EXISTS (SELECT 1 FROM ingest_events e
                         WHERE e.portal = $1 AND e.entity_type_id = $2
                           AND e.item_id = c.item_id AND e.received_at >= c.updated_at)""",
        portal,
        entity_type_id,
        [item_id for item_id, _ in candidates],
        [updated for _, updated in candidates],
    )
    return {row["item_id"] for row in rows}


def _record_sale_statement() -> QueuingStatement:
    b = StatementBuilder()
    values = b.params(
        "portal", "deal_id", "category_id", "stage_id", "source", "event_id", "closed_at"
    )
    return b.build(
        f"""WITH stored AS (
                INSERT INTO ingest_sales (portal, deal_id, category_id, stage_id, source,
                                          event_id, closed_at)
                VALUES ({", ".join(values)})
                ON CONFLICT DO NOTHING RETURNING 1),
            {b.queue(after="stored")}
            SELECT EXISTS (SELECT 1 FROM stored)""",  # noqa: S608 - placeholders only
        queued_if=bool,
    )


_RECORD_SALE = _record_sale_statement()


async def record_sale(outbox: Outbox, conn: Conn, sale: SaleClosed) -> bool:
    """Record the deal of `sale` as announced and queue `sale`, in one statement; False (nothing
    queued) when the deal was announced before."""
    announced: bool = await outbox.fetchval(
        conn,
        _RECORD_SALE,
        [sale],
        portal=sale.portal.key,
        deal_id=sale.deal_id,
        category_id=sale.category_id,
        stage_id=sale.stage_id,
        source=sale.source,
        event_id=sale.event_id,
        closed_at=sale.closed_at,
    )
    return announced


async def announced_sales(conn: Conn, portal: str, deal_ids: Sequence[int]) -> set[int]:
    """Which of `deal_ids` were announced as `sale.closed` already."""
    if not deal_ids:
        return set()
    rows = await conn.fetch(
        "SELECT deal_id FROM ingest_sales WHERE portal = $1 AND deal_id = ANY($2::bigint[])",
        portal,
        list(deal_ids),
    )
    return {row["deal_id"] for row in rows}


async def hold_unmapped(
    conn: Conn, event: WebhookReceived, unmapped: NotASurvey, fields: Mapping[str, Any]
) -> bool:
    """Hold the item of `event`, of a category no segment maps, with the fields it was read
    with; a state at least as new as the held one replaces it and waits again. False when a
    newer state is held."""
    held: bool = await conn.fetchval(
        """INSERT INTO ingest_unmapped_items AS h (portal, member_id, domain, entity_type_id,
                                                   item_id, category_id, updated_at, fields)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
           ON CONFLICT (portal, entity_type_id, item_id) DO UPDATE
           SET member_id = EXCLUDED.member_id, domain = EXCLUDED.domain,
               category_id = EXCLUDED.category_id, updated_at = EXCLUDED.updated_at,
               fields = EXCLUDED.fields, held_at = now(), released_at = NULL
           WHERE EXCLUDED.updated_at >= h.updated_at
           RETURNING true""",
        event.portal.key,
        event.portal.member_id,
        event.portal.domain,
        event.entity_type_id,
        event.item_id,
        unmapped.category_id,
        unmapped.updated_at,
        json.dumps(dict(fields), ensure_ascii=False, default=str),
    )
    return bool(held)


async def take_held(
    conn: Conn, entity_type_id: int, categories: Sequence[int], portal: str | None
) -> list[asyncpg.Record]:
    """Mark the held items of `categories` (of `portal` only, unless None) released and return
    them (portal, member_id, domain, item_id, category_id, updated_at, fields); rows another
    transaction is taking are skipped."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH taken AS (
               SELECT portal, entity_type_id, item_id FROM ingest_unmapped_items
               WHERE released_at IS NULL AND entity_type_id = $1 AND category_id = ANY($2::int[])
                 AND ($3::text IS NULL OR portal = $3)
               ORDER BY held_at, item_id
               FOR UPDATE SKIP LOCKED)
           UPDATE ingest_unmapped_items h SET released_at = now()
           FROM taken
           WHERE h.portal = taken.portal AND h.entity_type_id = taken.entity_type_id
             AND h.item_id = taken.item_id
           RETURNING h.portal, h.member_id, h.domain, h.item_id, h.category_id, h.updated_at,
                     h.fields::text AS fields""",
        entity_type_id,
        list(categories),
        portal,
    )
    return rows


async def record_offline_batch(conn: Conn, portal: str, process_id: str, lease_s: float) -> None:
    """Note a batch just reserved on `portal`, leased to its puller for `lease_s` seconds."""
    await conn.execute(
        """INSERT INTO ingest_offline_batches (portal, process_id, leased_until)
           VALUES ($1, $2, now() + make_interval(secs => $3))
           ON CONFLICT (portal, process_id) DO UPDATE SET leased_until = EXCLUDED.leased_until""",
        portal,
        process_id,
        lease_s,
    )


async def adopt_offline_batches(
    conn: Conn, portal: str, process_ids: Sequence[str], lease_s: float
) -> list[str]:
    """Note batches reserved on `portal` that no row names (a puller died between the
    reservation and its row): claimable once `lease_s` has passed, so a live puller finishes
    its own first. Returns those noted now."""
    rows = await conn.fetch(
        """INSERT INTO ingest_offline_batches (portal, process_id, leased_until)
           SELECT $1, unnest($2::text[]), now() + make_interval(secs => $3)
           ON CONFLICT (portal, process_id) DO NOTHING
           RETURNING process_id""",
        portal,
        list(process_ids),
        lease_s,
    )
    return [row["process_id"] for row in rows]


async def claim_offline_batch(conn: Conn, portal: str, lease_s: float) -> str | None:
    """Take the oldest batch of `portal` whose lease ran out (its puller died before clearing
    it), leased anew for `lease_s` seconds; None when there is none. Two pullers never take the
    same one."""
    process_id: str | None = await conn.fetchval(
        """UPDATE ingest_offline_batches SET leased_until = now() + make_interval(secs => $2)
           WHERE (portal, process_id) = (
               SELECT portal, process_id FROM ingest_offline_batches
               WHERE portal = $1 AND leased_until < now()
               ORDER BY reserved_at, process_id LIMIT 1
               FOR UPDATE SKIP LOCKED)
           RETURNING process_id""",
        portal,
        lease_s,
    )
    return process_id


async def close_offline_batch(conn: Conn, portal: str, process_id: str) -> None:
    """The batch was cleared on the portal: forget it."""
    await conn.execute(
        "DELETE FROM ingest_offline_batches WHERE portal = $1 AND process_id = $2",
        portal,
        process_id,
    )
