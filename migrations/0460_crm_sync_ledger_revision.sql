-- The ownership ledger orders two states of one answer with the same times (Bitrix24 keeps
-- seconds: an answer changed within the same second) by the answer's revision in scoring.
ALTER TABLE crm_field_ledger ADD COLUMN revision integer NOT NULL DEFAULT 0;
