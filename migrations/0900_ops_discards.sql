-- ops: dead letters discarded with `nps dlq discard`: who, when and why, and what the message was.

CREATE TABLE ops_dlq_discards (
    id             bigserial   PRIMARY KEY,
    queue          text        NOT NULL,
    message_id     text        NOT NULL,
    routing_key    text        NOT NULL,
    correlation_id text,
    failure        text        NOT NULL,
    attempts       integer     NOT NULL,
    body           jsonb       NOT NULL,
    reason         text        NOT NULL CHECK (btrim(reason) <> ''),
    discarded_by   text        NOT NULL CHECK (btrim(discarded_by) <> ''),
    discarded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ops_dlq_discards_at ON ops_dlq_discards (discarded_at DESC);
