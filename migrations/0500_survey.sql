-- The survey page: personal survey requests (one per link) and the answer each received. A
-- change of answer updates the same row and raises its version; each version is published once
-- (survey.answered, through the outbox, in the same transaction).

CREATE TABLE survey_requests (
    request_id  uuid        PRIMARY KEY,
    portal      text        NOT NULL,
    contact_id  bigint      NOT NULL,
    category_id integer     NOT NULL,
    sku         text,
    lang        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE survey_answers (
    request_id  uuid        PRIMARY KEY REFERENCES survey_requests (request_id),
    version     integer     NOT NULL,
    answer      jsonb       NOT NULL,
    answered_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
