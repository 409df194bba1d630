-- The ownership ledger orders answers by submission, update, then the survey item's id as a
-- number (Bitrix24 item ids grow with time, so of two items submitted in the same second the
-- later one wins), then the answer id. The item id was only inside the answer id
-- (`<portal key>:<item id>:<sku>`), where it compares as text (9 after 10): it gets its own column.
ALTER TABLE crm_field_ledger ADD COLUMN item_id bigint;

-- Entries written before (the table stays locked by the ALTER until this migration commits): the
-- answer id after the portal key and its colon starts with the item id.
UPDATE crm_field_ledger
SET item_id = coalesce(
    substring(substr(answer_id, length(portal) + 2) FROM '^([0-9]{1,18}):')::bigint, 0);

ALTER TABLE crm_field_ledger ALTER COLUMN item_id SET NOT NULL;
