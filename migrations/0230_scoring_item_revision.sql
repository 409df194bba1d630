-- The revision of the item version scoring holds: two versions with the same updated_at
-- (Bitrix24 keeps seconds) are ordered by ingest's per-item revision.
ALTER TABLE scoring_items ADD COLUMN revision integer NOT NULL DEFAULT 0;
