"""Dispatch's follow-up filled through the product's own code, for the pages that read it.

`Followed` is one sandbox portal (over HTTP, in process) and one portal key: crm_sync's
`EntityWriter` really creates the leads and tasks of routed answers there, dispatch's `Follower`
records them from crm_sync's outcome, a person takes them in work or closes them on the sandbox
(`handle`), the follower's timer reads them and escalates what is overdue, and crm_sync's
`DispatchWriter` carries an escalation out. The follower's and the sandbox's clocks move only
when the test moves them (`at`), together.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import yaml

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.dispatch import DispatchWriter
from services.dispatch.follower import Follower
from services.dispatch.followup import follow_id
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from services.sandbox.work import Step, handle
from shared.events import CrmWritten, DispatchCommand, PortalRef
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from tests.support.clock import FakeClock
from tests.support.crm_sync import CONFIG_PATH, answer, client_for, portal_ref, route, writers
from tests.support.paths import EXAMPLE_CONFIG

HEAD_OF_SERVICE = 17
"""`routing.service.responsible_id` of the example YAML: service leads are his, and escalations."""
HEAD_OF_SALES = 5
"""`routing.task.responsible_id` of the example YAML, and who the task's escalation goes to."""


def example_config() -> PortalConfig:
    """The example portal YAML as it is (what `nps run reports` reads in the browser test)."""
    return parse_portal_config(yaml.safe_load(EXAMPLE_CONFIG.read_text()))


def followup_config(timezone: str = "UTC", **followup: Any) -> PortalConfig:
    """The example portal YAML in `timezone`, following service leads with an SLA of 4 working
    hours (09:00-18:00, Monday to Friday) and the head of sales' tasks with one of 24 hours
    until closed (escalated to the head of sales); marketing leads without an SLA."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["portal"]["timezone"] = timezone
    data["dispatch"]["followup"] = {
        "service": {"sla_hours": 4, "working_hours": True},
        "task": {"sla_hours": 24, "until": "closed", "escalate_to": HEAD_OF_SALES},
        **followup,
    }
    return parse_portal_config(data)


class Followed:
    """Leads and tasks of one portal, put into the states a test needs by the product's code."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: PortalConfig,
        start: datetime,
        portal: str | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.now = start
        self._portal_clock = FakeClock(start.timestamp())
        self.portal = SandboxPortal(limits=Limits.off(), clock=self._portal_clock)
        seed_demo(self.portal, config_path=CONFIG_PATH, contacts=10, seed=42)
        self.client = client_for(self.portal)
        self.ref = portal_ref() if portal is None else PortalRef(member_id=portal)
        self.follower = Follower(
            pool, Outbox(), config, portal=self.client, clock=lambda: self.now, lease_s=300
        )

    @property
    def key(self) -> str:
        return self.ref.key

    def at(self, when: datetime) -> datetime:
        """Move both clocks to `when`."""
        self.now = when
        self._portal_clock.now = when.timestamp()
        return when

    def contact(self) -> int:
        return min(int(cid) for cid in self.portal.crm.records(CONTACT))

    async def created(self, action: str, manager: int | None = 31) -> CrmWritten:
        """A detractor's `action` (service, marketing, task) carried out by crm_sync on the
        sandbox now, and its outcome followed by dispatch."""
        the_answer = answer(self.ref, self.contact(), score=3, responsible_id=manager)
        written = await writers(self.pool, self.client, self.config).entities.create(
            route(the_answer, action)
        )
        assert written is not None
        assert written.entity_id is not None
        written = written.model_copy(update={"occurred_at": self.now})
        await self.follower.on_written(written)
        return written

    def handle(self, written: CrmWritten, to: Step) -> None:
        """A person takes the lead or task in work, or closes it, on the portal now."""
        assert written.entity_id is not None
        if written.entity_type == "lead":
            handle(self.portal.crm, lead_ids=[written.entity_id], to=to)
        else:
            handle(self.portal.crm, task_ids=[written.entity_id], to=to)

    async def tick(self, when: datetime) -> int:
        """The follower's round at `when`: what is due read, what is overdue escalated."""
        return await self.follower.tick(self.at(when))

    async def escalation(self, written: CrmWritten) -> DispatchCommand:
        """The one escalation command the follower queued for `written`."""
        follow = follow_id(written.action_id)
        rows = await self.pool.fetch(
            "SELECT body FROM outbox WHERE routing_key = 'dispatch.call_task'"
            " AND body::jsonb->>'request_id' = $1",
            str(follow),
        )
        (command,) = [DispatchCommand.model_validate(json.loads(r["body"])) for r in rows]
        return command

    async def escalation_created(self, written: CrmWritten) -> int:
        """crm_sync carries `written`'s escalation out on the sandbox; dispatch records its
        outcome. The escalation task's id."""
        writer = DispatchWriter(
            self.pool,
            Outbox(),
            CommandCoalescer(self.client, window_s=0.01),
            clock=lambda: self.now,
        )
        outcome = await writer.carry_out(await self.escalation(written))
        assert outcome is not None
        assert outcome.outcome == "created"
        assert outcome.entity_id is not None
        # published at the test's clock: the escalation task is followed from then on
        await self.follower.on_written(outcome.model_copy(update={"occurred_at": self.now}))
        return outcome.entity_id

    async def row(self, written: CrmWritten) -> dict[str, Any]:
        found = await self.pool.fetchrow(
            "SELECT * FROM dispatch_followups WHERE follow_id = $1", follow_id(written.action_id)
        )
        assert found is not None
        return dict(found)


def new_key() -> str:
    """A portal key no test has used (nothing followed on it)."""
    return f"m-none-{uuid.uuid4().hex[:8]}"
