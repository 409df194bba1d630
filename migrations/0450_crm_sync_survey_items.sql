-- crm_sync: the smart-process item each survey page request was written into, and the answer's
-- version last written there. A redelivered or older version finds its row and writes nothing;
-- a newer one updates the same item.

CREATE TABLE crm_survey_items (
    request_id uuid        PRIMARY KEY,
    item_id    bigint      NOT NULL,
    version    integer     NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
