-- crm_sync: the writer's own records (DESIGN §5).

-- One row per route action crm_sync was asked to carry out, by the router's deterministic id.
-- `attempts` is raised (and committed) before every create call, so a later attempt knows that an
-- earlier one may have created the entity and looks it up by ORIGIN_ID first. `intent` holds the
-- contact writes sent but not yet recorded (crash recovery); `repairs` the restores still owed
-- after a write of ours replaced a manual edit made while we were writing.
CREATE TABLE crm_actions (
    action_id    text        PRIMARY KEY,
    portal       text        NOT NULL,
    action       text        NOT NULL,
    answer_id    text        NOT NULL,
    contact_id   bigint,
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    attempts     integer     NOT NULL DEFAULT 0,
    outcome      text,
    entity_type  text,
    entity_id    bigint,
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    intent       jsonb,
    repairs      jsonb,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz
);
CREATE INDEX crm_actions_pending ON crm_actions (created_at) WHERE state = 'pending';

-- The ownership ledger: per contact field b24-nps writes, the value it wrote last and still owns
-- (NULL: the field holds nothing of ours) and the newest answer decided for the field, which an
-- older answer never overrides.
CREATE TABLE crm_field_ledger (
    portal        text        NOT NULL,
    contact_id    bigint      NOT NULL,
    field         text        NOT NULL,
    owned_value   jsonb,
    answer_id     text        NOT NULL,
    submitted_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    action_id     text        NOT NULL,
    changed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, contact_id, field)
);

-- The audit: every value b24-nps wrote into a contact field, with what was there before.
-- kind: answer (a survey answer), recovered (an answer's write confirmed after a crash),
-- restore (putting back a manual edit our write replaced), undo (`nps undo`).
CREATE TABLE crm_contact_writes (
    id            bigserial   PRIMARY KEY,
    portal        text        NOT NULL,
    contact_id    bigint      NOT NULL,
    field         text        NOT NULL,
    before_value  jsonb,
    after_value   jsonb,
    before_ours   boolean     NOT NULL DEFAULT false,
    kind          text        NOT NULL CHECK (kind IN ('answer', 'recovered', 'restore', 'undo')),
    answer_id     text,
    action_id     text,
    undo_of       bigint      REFERENCES crm_contact_writes (id),
    undone_by     bigint      REFERENCES crm_contact_writes (id),
    written_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_contact_writes_contact ON crm_contact_writes (contact_id, id);
CREATE INDEX crm_contact_writes_action ON crm_contact_writes (action_id);

-- Values b24-nps left alone: legacy or hand-edited values it would otherwise have replaced.
CREATE TABLE crm_conflicts (
    id              bigserial   PRIMARY KEY,
    portal          text        NOT NULL,
    contact_id      bigint      NOT NULL,
    field           text        NOT NULL,
    reason          text        NOT NULL,
    current_value   jsonb,
    proposed_value  jsonb,
    answer_id       text        NOT NULL,
    action_id       text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (action_id, field, reason)
);
CREATE INDEX crm_conflicts_contact ON crm_conflicts (contact_id, id);
