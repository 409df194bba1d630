-- Scoring (services/scoring): stored product answers, each survey item's latest version, the names
-- of segments and products, and the daily rollup every NPS report is summed from.

-- The newest version of each survey item applied so far: an older version arriving late is ignored.
CREATE TABLE scoring_items (
    portal      text        NOT NULL,
    item_id     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, item_id)
);

-- One row per product answer (answer_id = portal key + item id + sku), replaced in place by newer
-- versions of the item. Skipped answers have score NULL. Retracted answers (the product is no
-- longer ticked) keep their row with is_current = false. Only current, scored rows count.
CREATE TABLE scoring_answers (
    answer_id        text        PRIMARY KEY,
    portal           text        NOT NULL,
    entity_type_id   integer     NOT NULL,
    item_id          bigint      NOT NULL,
    category_id      integer     NOT NULL,
    segment          text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('cosmetics', 'equipment')),
    sku              text        NOT NULL,
    product_name     text        NOT NULL,
    scale            text        NOT NULL CHECK (scale IN ('0-10', '1-10', 'binary')),
    score            smallint,
    category         text        CHECK (category IN ('promoter', 'passive', 'detractor')),
    comment          text,
    service_request  boolean     NOT NULL,
    contact_id       bigint,
    responsible_id   bigint,
    submitted_at     timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    day              date        NOT NULL,
    is_current       boolean     NOT NULL,
    revision         integer     NOT NULL,
    source_event_id  uuid        NOT NULL,
    CHECK ((score IS NULL) = (category IS NULL))
);
CREATE INDEX scoring_answers_item ON scoring_answers (portal, item_id);

-- Latest names (and kind) of segments and products, for report rows.
CREATE TABLE scoring_segments (
    portal       text    NOT NULL,
    category_id  integer NOT NULL,
    name         text    NOT NULL,
    kind         text    NOT NULL CHECK (kind IN ('cosmetics', 'equipment')),
    PRIMARY KEY (portal, category_id)
);
CREATE TABLE scoring_products (
    portal  text NOT NULL,
    sku     text NOT NULL,
    name    text NOT NULL,
    PRIMARY KEY (portal, sku)
);

-- Rollups, maintained in the same transaction as scoring_answers: sums of the current, scored
-- answers. Reports read them instead of the answers:
--   scoring_daily: per portal, segment, product and day (every report without a manager in it);
--   scoring_manager_monthly: per portal, segment, product, responsible manager (0 = none) and
--   month (manager reports over whole months).
CREATE TABLE scoring_daily (
    portal       text    NOT NULL,
    category_id  integer NOT NULL,
    sku          text    NOT NULL,
    day          date    NOT NULL,
    promoters    integer NOT NULL,
    passives     integer NOT NULL,
    detractors   integer NOT NULL,
    score_sum    bigint  NOT NULL,
    PRIMARY KEY (portal, category_id, sku, day)
);
CREATE TABLE scoring_manager_monthly (
    portal          text    NOT NULL,
    category_id     integer NOT NULL,
    sku             text    NOT NULL,
    responsible_id  bigint  NOT NULL,
    month           date    NOT NULL CHECK (extract(day FROM month) = 1),
    promoters       integer NOT NULL,
    passives        integer NOT NULL,
    detractors      integer NOT NULL,
    score_sum       bigint  NOT NULL,
    PRIMARY KEY (portal, category_id, sku, responsible_id, month)
);

-- Manager reports that need single days (day/week trends, ranges not on month boundaries) read
-- the scored answers through these covering indexes (index-only scans).
CREATE INDEX scoring_answers_scored_by_day ON scoring_answers
    (day) INCLUDE (portal, category_id, sku, responsible_id, score, category)
    WHERE is_current AND score IS NOT NULL;
CREATE INDEX scoring_answers_scored_by_manager ON scoring_answers
    (responsible_id, day) INCLUDE (portal, category_id, sku, score, category)
    WHERE is_current AND score IS NOT NULL;
