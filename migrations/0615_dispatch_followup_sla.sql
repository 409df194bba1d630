-- Follow-up (docs/dispatch.md, Follow-up): the SLA a row began with is its own, so a later change
-- of the portal YAML does not rewrite history: `sla_hours` and `sla_until` were kept already, the
-- working-hours flag now too (null: no SLA, or a row followed before this column existed). An
-- escalation task is followed as well (action `escalation`, to its deadline, never escalated).
-- The portal's update events (ingest's `portal.updated.<lead|task>`) find the rows still read.

ALTER TABLE dispatch_followups ADD COLUMN sla_working_hours boolean;

-- the rows an escalation may be due for: never an escalation task's own
DROP INDEX dispatch_followups_due;
CREATE INDEX dispatch_followups_due ON dispatch_followups (due_at)
    WHERE due_at IS NOT NULL AND escalation IS NULL AND closed_at IS NULL
      AND action <> 'escalation';

CREATE INDEX dispatch_followups_entity ON dispatch_followups (entity_type, entity_id)
    WHERE next_read_at IS NOT NULL;
