-- States of one item within one second (Bitrix24's updatedTime keeps seconds) are ordered by a
-- per-item revision: a state published with the same updated_at as the last one, but other
-- content, gets the next revision. The key makes two states of one (updated_at, revision)
-- impossible, so concurrent publishers of the same item cannot both claim a revision.
ALTER TABLE ingest_item_versions ADD COLUMN revision integer NOT NULL DEFAULT 0;

UPDATE ingest_item_versions v SET revision = n.revision
FROM (SELECT portal, entity_type_id, item_id, updated_at, fingerprint,
             row_number() OVER (PARTITION BY portal, entity_type_id, item_id, updated_at
                                ORDER BY recorded_at, fingerprint) - 1 AS revision
      FROM ingest_item_versions) n
WHERE v.portal = n.portal AND v.entity_type_id = n.entity_type_id AND v.item_id = n.item_id
  AND v.updated_at = n.updated_at AND v.fingerprint = n.fingerprint AND n.revision > 0;

ALTER TABLE ingest_item_versions DROP CONSTRAINT ingest_item_versions_pkey;
ALTER TABLE ingest_item_versions
    ADD PRIMARY KEY (portal, entity_type_id, item_id, updated_at, revision);
