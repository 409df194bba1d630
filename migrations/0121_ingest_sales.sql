-- Ingest: the sales deals announced as sale.closed (dispatch, docs/ingest.md "Sales closed"), one
-- row per deal, inserted in the statement that queues the event: a deal is announced once,
-- whichever path (event, robot call, stage-history sweep) and however many messages bring it.
CREATE TABLE ingest_sales (
    portal       text        NOT NULL,
    deal_id      bigint      NOT NULL,
    category_id  integer     NOT NULL,
    stage_id     text        NOT NULL,
    source       text        NOT NULL CHECK (source IN ('event', 'robot', 'sweep')),
    event_id     uuid        NOT NULL,
    closed_at    timestamptz NOT NULL,
    announced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, deal_id)
);

-- The sweep keeps more than one watermark per entity type: the stage-history sweep of each sales
-- funnel has its own (scope 'stagehistory:<funnel>'); the item and deal sweeps keep scope ''.
ALTER TABLE ingest_sweep_watermarks ADD COLUMN scope text NOT NULL DEFAULT '';
ALTER TABLE ingest_sweep_watermarks DROP CONSTRAINT ingest_sweep_watermarks_pkey;
ALTER TABLE ingest_sweep_watermarks ADD PRIMARY KEY (portal, entity_type_id, scope);
