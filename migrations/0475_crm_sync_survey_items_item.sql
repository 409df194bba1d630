-- crm_sync: the survey page requests written into an item (or an NPS deal), found by the item's
-- id: the dashboard traces an answer back to its survey request this way (read module
-- `survey_item_requests`, docs/dashboard.md, All ratings).
CREATE INDEX crm_survey_items_item ON crm_survey_items (item_id);
