-- ops: the portal of the discards backfilled by 0905 by the rule every discard since has been
-- recorded with (`services/ops/dlq.py` `portal_of`, which is `PortalRef.key`): the first of the
-- message's `portal` and its `answer`'s `portal` that is an object decides; its key is the
-- member_id, else the domain (an empty one counts as none), else `default`; a member_id or domain
-- that is not a string makes it no portal reference at all (NULL). 0905 took "" and numbers as
-- keys, and looked at the answer when the message's own portal named nothing usable.

UPDATE ops_dlq_discards AS d
   SET portal = CASE
       WHEN r.ref IS NULL THEN NULL
       WHEN coalesce(jsonb_typeof(r.ref -> 'member_id'), 'null') NOT IN ('string', 'null')
         OR coalesce(jsonb_typeof(r.ref -> 'domain'), 'null') NOT IN ('string', 'null') THEN NULL
       ELSE coalesce(nullif(r.ref ->> 'member_id', ''), nullif(r.ref ->> 'domain', ''), 'default')
       END
  FROM (SELECT id, CASE WHEN jsonb_typeof(body -> 'portal') = 'object' THEN body -> 'portal'
                        WHEN jsonb_typeof(body #> '{answer,portal}') = 'object'
                        THEN body #> '{answer,portal}' END AS ref
          FROM ops_dlq_discards) AS r
 WHERE r.id = d.id;
