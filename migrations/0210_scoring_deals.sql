-- Scoring: answers held by NPS deals (kind 'deal', entity type 2) beside the smart process's.
-- A deal and a smart-process item may share an id, so an item is known by its entity type too.

ALTER TABLE scoring_items ADD COLUMN entity_type_id integer NOT NULL DEFAULT 0;
UPDATE scoring_items i SET entity_type_id = a.entity_type_id
    FROM scoring_answers a WHERE a.portal = i.portal AND a.item_id = i.item_id;
ALTER TABLE scoring_items ALTER COLUMN entity_type_id DROP DEFAULT;
ALTER TABLE scoring_items DROP CONSTRAINT scoring_items_pkey;
ALTER TABLE scoring_items ADD PRIMARY KEY (portal, entity_type_id, item_id);

DROP INDEX scoring_answers_item;
CREATE INDEX scoring_answers_item ON scoring_answers (portal, entity_type_id, item_id);

ALTER TABLE scoring_answers DROP CONSTRAINT scoring_answers_kind_check;
ALTER TABLE scoring_answers ADD CONSTRAINT scoring_answers_kind_check
    CHECK (kind IN ('cosmetics', 'equipment', 'deal'));
ALTER TABLE scoring_segments DROP CONSTRAINT scoring_segments_kind_check;
ALTER TABLE scoring_segments ADD CONSTRAINT scoring_segments_kind_check
    CHECK (kind IN ('cosmetics', 'equipment', 'deal'));
