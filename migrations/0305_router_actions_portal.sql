-- Router: the portal of each action sent (a deployment serves several portals, issue #22). An
-- action's answer id starts with its portal's key (`<portal key>:<item>:<sku>`, scoring's
-- `answer_id`), so the rows sent before the column existed get theirs from it: the served
-- portal's key (`ingest_portal`) when the answer id starts with it, else the answer id up to its
-- item (a key holding `:<digits>:` itself would be cut short there), else `default`.

ALTER TABLE router_actions ADD COLUMN portal text;
UPDATE router_actions
   SET portal = coalesce(
           (SELECT member_id FROM ingest_portal
             WHERE starts_with(router_actions.answer_id, member_id || ':')),
           substring(answer_id FROM '^(.+?):(?:D_)?[0-9]+:'),
           'default');
ALTER TABLE router_actions ALTER COLUMN portal SET NOT NULL;
CREATE INDEX router_actions_portal ON router_actions (portal, sent_at);
