-- ops: the portal of each discarded dead letter (a deployment serves several portals, issue
-- #22): the key (`PortalRef.key`: member_id, else domain, else `default`) of the `portal` the
-- message carries, at its top or in its `answer` (a scored answer, a route action); NULL for a
-- message that names no portal (one that did not parse, say). The rows discarded before the
-- column existed get theirs from the message they kept.

ALTER TABLE ops_dlq_discards ADD COLUMN portal text;
UPDATE ops_dlq_discards
   SET portal = coalesce(body #>> '{portal,member_id}', body #>> '{portal,domain}',
                         CASE WHEN jsonb_typeof(body -> 'portal') = 'object' THEN 'default' END,
                         body #>> '{answer,portal,member_id}', body #>> '{answer,portal,domain}',
                         CASE WHEN jsonb_typeof(body #> '{answer,portal}') = 'object'
                              THEN 'default' END);
CREATE INDEX ops_dlq_discards_portal ON ops_dlq_discards (portal, discarded_at DESC);
