-- crm_sync: dispatch's commands (docs/crm_sync.md, Dispatch's commands) are rows of crm_actions
-- like the router's actions, keyed by the command's `command_id`, with the survey request's id in
-- `answer_id`. `observed` holds what a portal send found in the deal's link field right before
-- it went out ({"link": value}; NULL: no send was attempted yet), so that after an uncertain
-- outcome the field read back tells whether the send ran.
ALTER TABLE crm_actions ADD COLUMN observed jsonb;
