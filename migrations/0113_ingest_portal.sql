-- Ingest: the one portal this deployment serves when `portal.member_id` is not pinned in the
-- portal YAML, learned from the first authenticated event or robot call and kept. The constant
-- primary key allows one row: of two first events at once, exactly one portal wins.
CREATE TABLE ingest_portal (
    served      boolean     PRIMARY KEY DEFAULT true CHECK (served),
    member_id   text        NOT NULL,
    domain      text,
    learned_at  timestamptz NOT NULL DEFAULT now()
);
