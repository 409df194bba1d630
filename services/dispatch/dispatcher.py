"""Dispatch at work (docs/dispatch.md): asking (a sale closed, a campaign), following the
request through the NPS deal, the link, the sends, the reminders and the answer, and the timer
that sends what is due. Every change of the register and the events it causes are one
transaction (the outbox); an e-mail is recorded as `sending` before it goes and as `sent` after.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from services.dispatch import store
from services.dispatch.followup import ESCALATION
from services.dispatch.mailer import Mailer, MailerUnavailableError, MessageRejectedError
from services.dispatch.messages import Survey, build_message
from services.dispatch.metrics import REQUESTS, SENDS
from services.dispatch.plan import (
    Close,
    Send,
    Wait,
    Wanted,
    document_read,
    next_step,
    request_for_robot,
    requests_for_sale,
    robot_document,
    robot_reason,
    skip_reason,
    state_after_send,
)
from services.dispatch.settings import DispatchSettings
from services.dispatch.store import Request
from shared.bitrix24 import Bitrix24Client, Bitrix24Error, Command, NotFound
from shared.db import Conn
from shared.dispatch_config import Dispatch
from shared.events import (
    CallTask,
    CrmWritten,
    DispatchCommand,
    Event,
    NewNpsDeal,
    PortalRef,
    PortalSend,
    RequestState,
    RobotAnswer,
    RobotCalled,
    SaleClosed,
    SurveyAnswered,
    SurveyOpened,
    SurveyOptedOut,
    SurveyReady,
    SurveyRequestChanged,
    SurveyRequested,
    derived_id,
    utcnow,
)
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.portals import PortalClients, PortalConfigs

log = get_logger(__name__)
Clock = Callable[[], datetime]
RETRY_MAIL_S = 60.0


def portal_ref(key: str) -> PortalRef:
    return PortalRef() if key == "default" else PortalRef(member_id=key)


@dataclass(frozen=True)
class Asked:
    """What asking did: the requests scheduled and skipped (with the reason)."""

    scheduled: list[Request]
    skipped: list[tuple[Wanted, str]]
    repeated: int


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        config: PortalConfig | PortalConfigs,
        *,
        portal: Bitrix24Client | PortalClients,
        mailer: Mailer,
        settings: DispatchSettings,
        clock: Clock = utcnow,
    ) -> None:
        """`config` and `portal`: the portals served (`PortalConfigs`, `PortalClients`), or one
        portal's configuration and client for every request (the CLI's campaign, tests)."""
        self._pool = pool
        self._outbox = outbox
        self._configs = config if isinstance(config, PortalConfigs) else PortalConfigs.one(config)
        self._clients = portal if isinstance(portal, PortalClients) else PortalClients.one(portal)
        self._mailer = mailer
        self._settings = settings
        self._clock = clock

    def _config(self, portal: str) -> PortalConfig:
        """The configuration of the request's portal (`UnknownPortalError`: not served)."""
        return self._configs.get(portal)

    def _dispatch(self, portal: str) -> Dispatch:
        return self._config(portal).dispatch or Dispatch()

    def _tz(self, portal: str) -> ZoneInfo:
        return ZoneInfo(self._config(portal).portal.timezone)

    # -- asking --------------------------------------------------------------------------

    async def ask(
        self, conn: Conn, portal: str, wanted: Sequence[Wanted], cause: Event | None
    ) -> Asked:
        """Admit or skip each wanted request (inside the caller's outbox transaction) and queue
        what a scheduled one needs first: its NPS deal or its link."""
        asked = Asked([], [], 0)
        for want in wanted:
            reason = None if want.contact_id is not None else "no_contact"
            if want.contact_id is not None:
                await store.lock_contact(conn, portal, want.contact_id)
            # Read after the contact's lock: a request another process admitted for the contact
            # meanwhile is then always the earlier one in the register.
            now = self._clock()
            if want.contact_id is not None:
                history = await store.contact_history(conn, portal, want.contact_id, want.survey)
                reason = skip_reason(
                    want, history, now, self._dispatch(portal).every_days_for(want.survey)
                )
            state: RequestState = "scheduled" if reason is None else "skipped"
            row = await store.insert_request(
                conn, portal, want, state=state, reason=reason, now=now
            )
            if row is None:
                asked = Asked(asked.scheduled, asked.skipped, asked.repeated + 1)
                continue
            events = self._state_events(row, cause)
            if reason is None:
                asked.scheduled.append(row)
                events.append(self._first_step(row, cause))
            else:
                asked.skipped.append((want, reason))
            await self._outbox.enqueue(conn, events)
        return asked

    def _first_step(self, row: Request, cause: Event | None) -> Event:
        if row.kind == "deal":
            deal = next(d for d in self._config(row.portal).deal_surveys if d.name == row.survey)
            return DispatchCommand(
                **self._envelope(row, cause, "nps_deal"),
                command_id=f"{row.request_id}:nps_deal:0",
                request_id=row.request_id,
                portal=portal_ref(row.portal),
                nps_deal=NewNpsDeal(
                    category_id=deal.category_id,
                    title=f"NPS: {deal.name}"
                    + (f" (deal {row.sale_deal_id})" if row.sale_deal_id else ""),
                    contact_id=row.contact_id,
                    company_id=row.company_id,
                    responsible_id=row.responsible_id,
                    sale_deal_id=row.sale_deal_id,
                    sale_deal_field=deal.sale_deal_field,
                ),
            )
        return self._link_request(row, cause, deal_id=None)

    def _link_request(self, row: Request, cause: Event | None, deal_id: int | None) -> Event:
        return SurveyRequested(
            **self._envelope(row, cause, "link"),
            request_id=row.request_id,
            portal=portal_ref(row.portal),
            contact_id=row.contact_id,
            category_id=row.category_id,
            sku=row.sku,
            lang="en" if row.lang == "en" else "ru",
            deal_id=deal_id,
        )

    def _envelope(self, row: Request, cause: Event | None, *what: object) -> dict[str, Any]:
        return {
            "event_id": derived_id(row.request_id, *what),
            "correlation_id": cause.correlation_id if cause else f"dispatch:{row.request_id}",
            "causation_id": None if cause is None else str(cause.event_id),
        }

    def _state_events(self, row: Request, cause: Event | None) -> list[Event]:
        """The events of the request's new state: its `dispatch.request.<state>` and, for a
        request the robot asked for that is sent or done without a message, the answer to the
        waiting business process (one command id per request: crm_sync answers once)."""
        events: list[Event] = [self._changed(row, cause)]
        if row.robot_token is not None and (row.sends > 0 or row.closed_at is not None):
            sent = row.sends > 0
            events.append(
                self._robot_answer(
                    row.request_id,
                    row.portal,
                    cause,
                    RobotAnswer(
                        event_token=row.robot_token,
                        sent=sent,
                        reason=None if sent else robot_reason(row.state, row.reason),
                    ),
                )
            )
        return events

    def _robot_answer(
        self, request_id: uuid.UUID, portal: str, cause: Event | None, answer: RobotAnswer
    ) -> DispatchCommand:
        return DispatchCommand(
            event_id=derived_id(request_id, "robot_answer"),
            correlation_id=cause.correlation_id if cause else f"dispatch:{request_id}",
            causation_id=None if cause is None else str(cause.event_id),
            command_id=f"{request_id}:robot_answer:0",
            request_id=request_id,
            portal=portal_ref(portal),
            robot_answer=answer,
        )

    def _changed(self, row: Request, cause: Event | None) -> SurveyRequestChanged:
        REQUESTS.labels(state=row.state).inc()
        return SurveyRequestChanged(
            **self._envelope(row, cause, "state", row.state, row.sends, row.reason),
            request_id=row.request_id,
            portal=portal_ref(row.portal),
            survey=row.survey,
            source=row.source,
            contact_id=row.contact_id,
            channel=row.channel,
            state=row.state,
            reason=row.reason,
            reminders=max(row.sends - 1, 0),
            deal_id=row.nps_deal_id,
            sale_deal_id=row.sale_deal_id,
            sku=row.sku,
            changed_at=row.updated_at,
        )

    # -- events --------------------------------------------------------------------------

    async def on_sale(self, sale: SaleClosed) -> None:
        wanted = requests_for_sale(sale, self._config(sale.portal.key))
        async with self._outbox.transaction(self._pool) as conn:
            asked = await self.ask(conn, sale.portal.key, wanted, sale)
        log.info(
            "sale_asked",
            deal_id=sale.deal_id,
            scheduled=len(asked.scheduled),
            skipped=[reason for _, reason in asked.skipped],
            repeated=asked.repeated,
        )

    async def on_robot(self, call: RobotCalled) -> None:
        """The "Send NPS survey" robot's call: its request asked once per `event_token` (a
        repeated call finds it); a call that asks for nothing (no such document, an unknown
        survey, an unusable property) is answered at once with the reason."""
        portal = call.portal.key
        config = self._config(portal)
        try:
            read = await self._clients.get(portal).call(
                "crm.item.get", document_read(call.entity_type_id, call.entity_id)
            )
            document = robot_document(read.result)
        except NotFound:
            document = None
        wanted = (
            f"no CRM item {call.entity_id} of type {call.entity_type_id} on the portal"
            if document is None
            else request_for_robot(call, document, config, self._clock())
        )
        async with self._outbox.transaction(self._pool) as conn:
            if isinstance(wanted, str):
                request_id = derived_id("dispatch", portal, "robot", call.event_token)
                answer = RobotAnswer(event_token=call.event_token, sent=False, reason=wanted)
                await self._outbox.enqueue(
                    conn, [self._robot_answer(request_id, portal, call, answer)]
                )
                log.info("robot_not_asked", code=call.code, reason=wanted)
                return
            asked = await self.ask(conn, portal, [wanted], call)
        log.info(
            "robot_asked",
            code=call.code,
            entity_type_id=call.entity_type_id,
            entity_id=call.entity_id,
            scheduled=len(asked.scheduled),
            skipped=[reason for _, reason in asked.skipped],
            repeated=asked.repeated,
        )

    async def on_written(self, written: CrmWritten) -> None:
        request_text, action, n_text = written.action_id.rsplit(":", 2)
        if action == ESCALATION:
            return  # a follow-up's escalation task: the follower records it (dispatch.followup)
        request_id, n = uuid.UUID(request_text), int(n_text)
        now = self._clock()
        async with self._outbox.transaction(self._pool) as conn:
            row = await store.get(conn, request_id, lock=True)
            if row is None:
                raise PermanentError(f"crm.written.{action} for unknown request {request_id}")
            failed = written.outcome == "failed"
            reason = str(written.details.get("reason", "the portal refused it"))
            if action == "nps_deal":
                if row.nps_deal_id is not None or row.closed_at is not None:
                    return
                if failed:
                    await self._close(
                        conn, row, "failed", f"NPS deal not created: {reason}", written
                    )
                    return
                row = await store.update(conn, request_id, now, nps_deal_id=written.entity_id)
                await self._outbox.enqueue(
                    conn, [self._link_request(row, written, deal_id=written.entity_id)]
                )
            elif action == "survey_send":
                await self._sent(conn, row, n, None if not failed else reason, written)
            elif action == "call_task" and failed:
                await store.update(conn, request_id, now, reason=f"call task not created: {reason}")
            elif action == "call_task":
                await store.update(conn, request_id, now, call_task_id=written.entity_id)

    async def on_ready(self, ready: SurveyReady) -> None:
        now = self._clock()
        async with self._outbox.transaction(self._pool) as conn:
            row = await store.get(conn, ready.request_id, lock=True)
            if row is None or row.link_url is not None or row.closed_at is not None:
                return
            await store.update(
                conn,
                row.request_id,
                now,
                link_url=ready.url,
                optout_url=ready.optout_url,
                company=ready.company,
                logo_url=ready.logo_url,
                expires_at=ready.expires_at,
                due_at=now,
            )

    async def on_opened(self, opened: SurveyOpened) -> None:
        now = self._clock()
        async with self._outbox.transaction(self._pool) as conn:
            row = await store.get(conn, opened.request_id, lock=True)
            if row is None or row.opened_at is not None:
                return
            state: RequestState = "opened" if row.state == "sent" else row.state
            row = await store.update(
                conn, row.request_id, now, opened_at=opened.opened_at, state=state
            )
            if state == "opened":
                await self._outbox.enqueue(conn, self._state_events(row, opened))

    async def on_answered(self, answered: SurveyAnswered) -> None:
        now = self._clock()
        async with self._outbox.transaction(self._pool) as conn:
            row = await store.get(conn, answered.request_id, lock=True)
            if row is None or row.answered_at is not None:
                return  # a link made by hand, or a changed answer
            row = await store.update(
                conn,
                row.request_id,
                now,
                answered_at=answered.answered_at,
                opened_at=row.opened_at or answered.answered_at,
                state="answered",
                reason=None,
                due_at=None,
                closed_at=now,
            )
            await self._outbox.enqueue(conn, self._state_events(row, answered))

    async def on_opted_out(self, opted: SurveyOptedOut) -> None:
        now = self._clock()
        portal = opted.portal.key
        async with self._outbox.transaction(self._pool) as conn:
            await store.lock_contact(conn, portal, opted.contact_id)
            if not await store.opt_out(
                conn, portal, opted.contact_id, opted.request_id, opted.opted_out_at
            ):
                return
            events: list[Event] = []
            for row in await store.open_requests_of(conn, portal, opted.contact_id):
                state: RequestState = "skipped" if row.sends == 0 else row.state
                changed = await store.update(
                    conn,
                    row.request_id,
                    now,
                    state=state,
                    reason="opted_out",
                    due_at=None,
                    closed_at=now,
                )
                events.extend(self._state_events(changed, opted))
            await self._outbox.enqueue(conn, events)

    # -- the timer -----------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> int:
        """Do what is due at `now` (default: the clock); the number of requests looked at."""
        now = now or self._clock()
        lease = timedelta(seconds=self._settings.lease_s)
        emails: list[tuple[Request, int]] = []
        async with self._outbox.transaction(self._pool) as conn:
            rows = await store.due(conn, now, self._settings.batch, self._configs.keys())
            for row in rows:
                in_flight = await store.sending(conn, row.request_id, lease, now)
                if in_flight:
                    later = now + lease if row.channel == "email" else None
                    await store.update(conn, row.request_id, now, due_at=later)
                    continue
                step = next_step(
                    row.progress(False), now, self._dispatch(row.portal), self._tz(row.portal)
                )
                if isinstance(step, Wait):
                    await store.update(conn, row.request_id, now, due_at=step.until)
                elif isinstance(step, Close):
                    await self._close(conn, row, step.state, None, None)
                elif isinstance(step, Send):
                    await store.start_send(conn, row.request_id, step.n, row.channel, now)
                    if row.channel == "portal":
                        await store.update(conn, row.request_id, now, due_at=None)
                        await self._outbox.enqueue(conn, [self._portal_send(row, step.n)])
                    else:
                        await store.update(conn, row.request_id, now, due_at=now + lease)
                        emails.append((row, step.n))
        if emails:
            await self._send_emails(emails, now)
        return len(rows)

    async def _close(
        self,
        conn: Conn,
        row: Request,
        state: RequestState,
        reason: str | None,
        cause: Event | None,
    ) -> None:
        now = self._clock()
        events: list[Event] = []
        unanswered = self._dispatch(row.portal).unanswered
        if state == "unanswered" and unanswered.task:
            responsible = row.responsible_id or unanswered.responsible_id
            if responsible is None:
                reason = "no responsible for the call task (dispatch.unanswered.responsible_id)"
            else:
                events.append(self._call_task(row, responsible, cause))
        row = await store.update(
            conn, row.request_id, now, state=state, reason=reason, due_at=None, closed_at=now
        )
        events[:0] = self._state_events(row, cause)
        await self._outbox.enqueue(conn, events)

    def _call_task(self, row: Request, responsible: int, cause: Event | None) -> DispatchCommand:
        unanswered = self._dispatch(row.portal).unanswered
        deal = row.nps_deal_id or row.sale_deal_id
        return DispatchCommand(
            **self._envelope(row, cause, "call_task"),
            command_id=f"{row.request_id}:call_task:0",
            request_id=row.request_id,
            portal=portal_ref(row.portal),
            call_task=CallTask(
                responsible_id=responsible,
                title=f"Call the customer: NPS survey not answered ({row.survey})",
                description=(
                    f"The customer (contact {row.contact_id}) did not answer the NPS survey"
                    f" {row.survey!r} after {row.sends} message(s) by {row.channel}"
                    + (f", deal {deal}" if deal else "")
                    + ". Please call and ask how we did and why they did not answer."
                ),
                deadline_hours=unanswered.deadline_hours,
                contact_id=row.contact_id,
                deal_id=deal,
            ),
        )

    def _portal_send(self, row: Request, n: int) -> DispatchCommand:
        channel = self._dispatch(row.portal).portal_channel
        if channel is None:
            raise PermanentError("dispatch.portal_channel is not configured")
        deal = row.nps_deal_id or row.sale_deal_id
        assert row.link_url is not None
        trigger = channel.reminder_trigger if n and channel.reminder_trigger else channel.trigger
        return DispatchCommand(
            **self._envelope(row, None, "survey_send", n),
            command_id=f"{row.request_id}:survey_send:{n}",
            request_id=row.request_id,
            portal=portal_ref(row.portal),
            survey_send=PortalSend(
                deal_id=deal or 0,
                link_field=channel.link_field,
                url=row.link_url if n == 0 else f"{row.link_url}?m={n}",
                trigger=trigger,
                stage=None if trigger else channel.stage,
                timeline_title=(
                    ("NPS survey reminder sent" if n else "NPS survey sent")
                    if channel.timeline
                    else None
                ),
                timeline_text=f"Survey {row.survey!r}: the customer's personal link was sent.",
                reminder=n,
            ),
        )

    async def _sent(
        self, conn: Conn, row: Request, n: int, failure: str | None, cause: Event | None
    ) -> None:
        """Record send `n`'s outcome (once) and the request's state after it."""
        now = self._clock()
        if not await store.finish_send(
            conn, row.request_id, n, state="failed" if failure else "sent", reason=failure, now=now
        ):
            return
        SENDS.labels(channel=row.channel, outcome="failed" if failure else "sent").inc()
        if failure is not None:
            await self._close(conn, row, "failed", failure, cause)
            return
        if row.closed_at is not None:
            return  # answered or opted out while the message was on its way
        row = await store.update(
            conn,
            row.request_id,
            now,
            sends=n + 1,
            sent_at=row.sent_at or now,
            last_sent_at=now,
            state=state_after_send(n, row.opened_at is not None),
            due_at=now,
        )
        await self._outbox.enqueue(conn, self._state_events(row, cause))

    async def _send_emails(self, emails: list[tuple[Request, int]], now: datetime) -> None:
        """Each portal's messages of the round, its contacts read through its own client."""
        by_portal: dict[str, list[tuple[Request, int]]] = {}
        for row, n in emails:
            by_portal.setdefault(row.portal, []).append((row, n))
        for portal, its in by_portal.items():
            await self._send_portal_emails(portal, its, now)

    async def _send_portal_emails(
        self, portal: str, emails: list[tuple[Request, int]], now: datetime
    ) -> None:
        contacts = await self._contacts(portal, [row.contact_id for row, _ in emails])
        for row, n in emails:
            if contacts is None:
                await self._retry_later(row, now, "the portal could not be read")
                continue
            # While this process talks to the SMTP server about a request, it holds the
            # request's lock: another replica that takes the send for crashed (its lease ran
            # out) finds it held and leaves it, and a crash releases it with the session.
            async with self._pool.acquire() as held:
                key = f"dispatch-send:{row.request_id}"
                if not await held.fetchval(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key
                ):
                    log.info("survey_mail_in_flight_elsewhere", request_id=str(row.request_id))
                    continue
                try:
                    await self._send_one(row, n, contacts.get(row.contact_id, (None, None)), now)
                finally:
                    await held.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)

    async def _send_one(
        self, row: Request, n: int, contact: tuple[str | None, str | None], now: datetime
    ) -> None:
        """Send message `n` of `row` and record it (or why it failed)."""
        email = self._dispatch(row.portal).email
        address, name = contact
        failure: str | None = None
        if email is None:
            failure = "dispatch.email is not configured"
        elif address is None:
            failure = "the contact has no e-mail address"
        else:
            if not await self._renew_lease(row, n, claimed_at=now):
                return
            message = build_message(
                self._survey(row, n, name), email.sender, address, email.reply_to
            )
            try:
                await self._mailer.send(message)
            except MessageRejectedError as exc:
                failure = f"the SMTP server refused the message: {exc}"
            except MailerUnavailableError as exc:
                await self._retry_later(row, now, str(exc))
                return
        async with self._outbox.transaction(self._pool) as conn:
            locked = await store.get(conn, row.request_id, lock=True)
            assert locked is not None
            await self._sent(conn, locked, n, failure, None)
        log.info(
            "survey_mailed" if failure is None else "survey_mail_failed",
            request_id=str(row.request_id),
            n=n,
        )

    async def _renew_lease(self, row: Request, n: int, *, claimed_at: datetime) -> bool:
        """Each message of a round gets a lease of its own right before it goes: a slow round
        never lets another replica send its later messages too."""
        fresh = self._clock()
        lease = timedelta(seconds=self._settings.lease_s)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.reclaim_send(
                conn, row.request_id, n, claimed_at=claimed_at, now=fresh
            ):
                log.info("survey_mail_taken_over", request_id=str(row.request_id), n=n)
                return False
            await store.update(conn, row.request_id, fresh, due_at=fresh + lease)
        return True

    async def _retry_later(self, row: Request, now: datetime, why: str) -> None:
        log.warning("survey_mail_deferred", request_id=str(row.request_id), reason=why)
        SENDS.labels(channel=row.channel, outcome="deferred").inc()
        async with self._pool.acquire() as conn:
            await store.update(
                conn, row.request_id, now, due_at=now + timedelta(seconds=RETRY_MAIL_S)
            )
            # The attempt is over: no longer in flight, tried again when due.
            await conn.execute(
                "UPDATE dispatch_sends SET started_at = $2, reason = $3"
                " WHERE request_id = $1 AND state = 'sending'",
                row.request_id,
                now - timedelta(seconds=self._settings.lease_s),
                why,
            )

    def _survey(self, row: Request, n: int, name: str | None) -> Survey:
        config = self._config(row.portal)
        deal = next((d for d in config.deal_surveys if d.name == row.survey), None)
        scale = (deal.scale if deal else None) or config.nps.scale
        assert row.link_url is not None
        assert row.optout_url is not None
        expires = (
            ""
            if row.expires_at is None
            else row.expires_at.astimezone(self._tz(row.portal)).strftime("%Y-%m-%d")
        )
        return Survey(
            request_id=str(row.request_id),
            n=n,
            lang=row.lang,
            scale=scale,
            url=row.link_url,
            optout_url=row.optout_url,
            company=row.company or "",
            logo_url=row.logo_url,
            expires=expires,
            name=name,
        )

    async def _contacts(
        self, portal: str, ids: list[int]
    ) -> dict[int, tuple[str | None, str | None]] | None:
        """Each contact's first e-mail address and first name, read in batches from `portal`;
        None when the portal cannot be read now."""
        commands = [
            Command(f"c{contact}", "crm.contact.get", {"id": contact})
            for contact in sorted(set(ids))
        ]
        try:
            response = await self._clients.get(portal).batch(commands)
        except Bitrix24Error:
            return None
        found: dict[int, tuple[str | None, str | None]] = {}
        for command in commands:
            contact = int(command.name[1:])
            result = response.results.get(command.name)
            if not isinstance(result, dict):
                continue
            emails = result.get("EMAIL") or []
            address = next(
                (e.get("VALUE") for e in emails if isinstance(e, dict) and e.get("VALUE")), None
            )
            found[contact] = (address, result.get("NAME") or None)
        return found
