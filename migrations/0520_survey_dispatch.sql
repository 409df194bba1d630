-- The survey page serves dispatch (docs/survey.md, Requests from dispatch): a request dispatch
-- made keeps dispatch's correlation id (its events carry it on), the first time its form was
-- shown (survey.opened, once) and the customer's opt-out (survey.opted_out, once).

ALTER TABLE survey_requests
    ADD COLUMN correlation_id text,
    ADD COLUMN opened_at      timestamptz,
    ADD COLUMN opted_out_at   timestamptz;
