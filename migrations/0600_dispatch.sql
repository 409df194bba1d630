-- Dispatch (docs/dispatch.md): the register of survey requests b24-nps sends itself, every send
-- (recorded before and after the message goes out), opt-outs and campaigns.

CREATE TABLE dispatch_campaigns (
    campaign_id uuid        PRIMARY KEY,
    portal      text        NOT NULL,
    name        text        NOT NULL,
    survey      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    asked       integer     NOT NULL DEFAULT 0,
    skipped     integer     NOT NULL DEFAULT 0
);

CREATE TABLE dispatch_requests (
    request_id     uuid        PRIMARY KEY,
    portal         text        NOT NULL,
    source         text        NOT NULL CHECK (source IN ('sale', 'robot', 'campaign')),
    ref            text        NOT NULL,          -- the sale's deal id or the campaign id
    survey         text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('deal', 'segment')),
    category_id    integer     NOT NULL,
    sku            text,
    contact_id     bigint      NOT NULL,
    company_id     bigint,
    responsible_id bigint,
    sale_deal_id   bigint,
    nps_deal_id    bigint,
    lang           text        NOT NULL,
    channel        text        NOT NULL CHECK (channel IN ('email', 'portal')),
    state          text        NOT NULL,
    reason         text,
    link_url       text,
    optout_url     text,
    company        text,
    logo_url       text,
    expires_at     timestamptz,
    sends          integer     NOT NULL DEFAULT 0, -- messages sent: the first and the reminders
    due_at         timestamptz,                    -- when the timer looks at it next; null: waits
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,                    -- the first message
    last_sent_at   timestamptz,                    -- the last message (first or reminder)
    opened_at      timestamptz,
    answered_at    timestamptz,
    closed_at      timestamptz,                    -- answered, unanswered, expired, failed
    call_task_id   bigint,                         -- the call task of an unanswered request
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (portal, source, ref, survey, sku, contact_id)
);

CREATE INDEX dispatch_requests_due ON dispatch_requests (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX dispatch_requests_contact ON dispatch_requests (portal, contact_id, survey, created_at);
CREATE INDEX dispatch_requests_state ON dispatch_requests (portal, state, created_at);

CREATE TABLE dispatch_sends (
    request_id  uuid        NOT NULL REFERENCES dispatch_requests (request_id),
    n           integer     NOT NULL,              -- 0: the first message, n: the n-th reminder
    channel     text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    reason      text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    PRIMARY KEY (request_id, n)
);

CREATE TABLE dispatch_optouts (
    portal      text        NOT NULL,
    contact_id  bigint      NOT NULL,
    request_id  uuid,
    opted_at    timestamptz NOT NULL,
    PRIMARY KEY (portal, contact_id)
);
