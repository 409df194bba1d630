-- crm_sync: the stage ledger of NPS deals. Per deal, the stage b24-nps last moved it to and the
-- answer version that decided it: a final stage b24-nps set may be replaced by a newer answer, a
-- final stage a person set never is, and an older answer never undoes a newer one's move.
CREATE TABLE crm_deal_stages (
    portal      text        NOT NULL,
    deal_id     bigint      NOT NULL,
    stage_id    text        NOT NULL,
    answer_id   text        NOT NULL,
    updated_at  timestamptz NOT NULL,
    action_id   text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, deal_id)
);
