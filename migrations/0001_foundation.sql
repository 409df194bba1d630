-- Foundation: the transactional outbox, consumer de-duplication, the shared portal rate budget.

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    message_id    uuid        NOT NULL UNIQUE,
    exchange      text        NOT NULL DEFAULT 'nps',
    routing_key   text        NOT NULL,
    correlation_id text       NOT NULL,
    body          jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- One row per (consumer, message) handled: a redelivered message changes nothing.
CREATE TABLE processed_messages (
    consumer     text        NOT NULL,
    message_id   uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- The leaky bucket of each portal, shared by every process that calls it (DESIGN §6).
CREATE TABLE rate_buckets (
    portal      text             PRIMARY KEY,
    level       double precision NOT NULL DEFAULT 0,
    updated_at  double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
    slow_until  double precision NOT NULL DEFAULT 0
);
