-- Router: every action it has sent, by its deterministic id. A redelivered scored event, a replay
-- from the DLQ or a later version of the same answer that calls for the same action (same answer,
-- rule and outcome, hence the same id) finds its row here and sends nothing.

CREATE TABLE router_actions (
    action_id       uuid        PRIMARY KEY,
    answer_id       text        NOT NULL,
    action          text        NOT NULL,
    rule            text        NOT NULL,
    scored_event_id uuid        NOT NULL,
    correlation_id  text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX router_actions_answer ON router_actions (answer_id);
