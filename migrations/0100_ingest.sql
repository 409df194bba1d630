-- Ingest: accepted Bitrix24 events, the item versions turned into answers, the sweep watermark.

-- Every accepted event, robot call and sweep submission, stored before the request is answered.
-- A repeat of (portal, event, entity type, item, ts) is a duplicate and is not stored again;
-- a NULL ts (a robot call without updated_time) never counts as a duplicate.
CREATE TABLE ingest_events (
    id             bigserial   PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    portal         text        NOT NULL,
    member_id      text,
    domain         text,
    source         text        NOT NULL CHECK (source IN ('event', 'robot', 'sweep')),
    event          text        NOT NULL,
    entity_type_id integer     NOT NULL,
    item_id        bigint      NOT NULL,
    ts             bigint,
    payload        jsonb       NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ingest_events_dedup
    ON ingest_events (portal, event, entity_type_id, item_id, ts);
CREATE INDEX ingest_events_item ON ingest_events (portal, entity_type_id, item_id, received_at);

-- Each distinct state of an item published as form.submitted (by updatedTime and content), so
-- the same answer read twice (event + sweep, ADD + UPDATE) is published once.
CREATE TABLE ingest_item_versions (
    portal         text        NOT NULL,
    entity_type_id integer     NOT NULL,
    item_id        bigint      NOT NULL,
    updated_at     timestamptz NOT NULL,
    fingerprint    text        NOT NULL,
    event_id       uuid        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, entity_type_id, item_id, updated_at, fingerprint)
);

-- The catch-up sweep's progress per portal and smart process: items updated at or after
-- `watermark` (less a small overlap) are listed on the next sweep.
CREATE TABLE ingest_sweep_watermarks (
    portal         text        NOT NULL,
    entity_type_id integer     NOT NULL,
    watermark      timestamptz NOT NULL,
    swept_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, entity_type_id)
);
