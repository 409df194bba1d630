-- crm_sync: the portal of each survey page request written into an item or NPS deal (a
-- deployment serves several portals, issue #22; an item id is only unique within its portal).
-- The rows written before the column existed get their request's portal from the survey page's
-- register (`survey_requests`, where the database has it: it is created by a later migration),
-- else the served portal's key (`ingest_portal`, the portal learned from the first event), else
-- `default`: until now one deployment served one portal.

ALTER TABLE crm_survey_items ADD COLUMN portal text;
DO $$
BEGIN
    IF to_regclass('survey_requests') IS NOT NULL THEN
        EXECUTE 'UPDATE crm_survey_items c SET portal = r.portal
                   FROM survey_requests r WHERE r.request_id = c.request_id';
    END IF;
END
$$;
UPDATE crm_survey_items SET portal = coalesce((SELECT member_id FROM ingest_portal), 'default')
 WHERE portal IS NULL;
ALTER TABLE crm_survey_items ALTER COLUMN portal SET NOT NULL;
DROP INDEX crm_survey_items_item;
CREATE INDEX crm_survey_items_item ON crm_survey_items (portal, item_id);
