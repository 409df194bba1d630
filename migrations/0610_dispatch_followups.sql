-- Follow-up (docs/dispatch.md, Follow-up): every lead and task crm_sync created for an action
-- (service, marketing, task) or for dispatch (call_task), followed in the portal until someone
-- acts: its state as last read, when it first changed and when it closed, its SLA deadline and
-- its one escalation.

CREATE TABLE dispatch_followups (
    follow_id          uuid        PRIMARY KEY,   -- derived from action_id
    portal             text        NOT NULL,
    action             text        NOT NULL,      -- service, marketing, task, call_task
    action_id          text        NOT NULL UNIQUE, -- the router's action id / dispatch's command id
    entity_type        text        NOT NULL CHECK (entity_type IN ('lead', 'task')),
    entity_id          bigint      NOT NULL,
    responsible_id     bigint,                    -- who the lead or task is assigned to (as read)
    manager_id         bigint,                    -- the answer's (or the sale's) manager
    contact_id         bigint,
    deal_id            bigint,
    answer_id          text,
    request_id         uuid,                      -- dispatch's request (call tasks)
    state              text        NOT NULL DEFAULT 'open'
                                   CHECK (state IN ('open', 'in_work', 'closed')),
    outcome            text,                      -- closed: success, failure, deleted
    status             text,                      -- the portal's STATUS_ID / task STATUS as read
    created_at         timestamptz NOT NULL,
    first_change_at    timestamptz,               -- left `open` (in work or closed)
    closed_at          timestamptz,
    reads              integer     NOT NULL DEFAULT 0,
    last_read_at       timestamptz,
    next_read_at       timestamptz,               -- null: no longer read (closed or stopped)
    stopped_at         timestamptz,               -- no longer read although not closed
    sla_hours          double precision,
    sla_until          text        CHECK (sla_until IN ('acted', 'closed')),
    due_at             timestamptz,               -- the SLA's deadline; null: no SLA
    escalation         text        CHECK (escalation IN ('queued', 'created', 'failed', 'skipped')),
    escalated_at       timestamptz,
    escalated_to       bigint,
    escalation_task_id bigint,
    escalation_reason  text,
    updated_at         timestamptz NOT NULL
);

CREATE INDEX dispatch_followups_next_read ON dispatch_followups (next_read_at)
    WHERE next_read_at IS NOT NULL;
CREATE INDEX dispatch_followups_due ON dispatch_followups (due_at)
    WHERE due_at IS NOT NULL AND escalation IS NULL AND closed_at IS NULL;
CREATE INDEX dispatch_followups_created ON dispatch_followups (portal, created_at);
