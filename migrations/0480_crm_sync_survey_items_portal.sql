-- crm_sync: the portal of each survey page request written into an item or NPS deal (a
-- deployment serves several portals, issue #22; an item id is only unique within its portal).
-- The rows written before the column existed get the served portal's key (`ingest_portal`, the
-- portal learned from the first event), else `default`: until now one deployment served one
-- portal.

ALTER TABLE crm_survey_items ADD COLUMN portal text;
UPDATE crm_survey_items SET portal = coalesce((SELECT member_id FROM ingest_portal), 'default');
ALTER TABLE crm_survey_items ALTER COLUMN portal SET NOT NULL;
DROP INDEX crm_survey_items_item;
CREATE INDEX crm_survey_items_item ON crm_survey_items (portal, item_id);
