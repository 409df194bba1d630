-- A third scoring rollup, maintained like scoring_manager_monthly (same transaction as the answers,
-- same deltas): sums of the current, scored answers per portal, segment, product, responsible
-- manager (0 = none) and ISO week (`week` is its Monday). Manager reports split by week read the
-- whole weeks from here and only the partial weeks at the range edges from the answers.
CREATE TABLE scoring_manager_weekly (
    portal          text    NOT NULL,
    category_id     integer NOT NULL,
    sku             text    NOT NULL,
    responsible_id  bigint  NOT NULL,
    week            date    NOT NULL CHECK (extract(isodow FROM week) = 1),
    promoters       integer NOT NULL,
    passives        integer NOT NULL,
    detractors      integer NOT NULL,
    score_sum       bigint  NOT NULL,
    PRIMARY KEY (portal, category_id, sku, responsible_id, week)
);

-- Answers stored before this migration: fill the rollup from them. The answers are locked against
-- writes until this migration commits, so no answer lands between this snapshot and the table.
LOCK TABLE scoring_answers IN SHARE MODE;
INSERT INTO scoring_manager_weekly (portal, category_id, sku, responsible_id, week,
                                    promoters, passives, detractors, score_sum)
SELECT portal, category_id, sku, coalesce(responsible_id, 0),
       date_trunc('week', day::timestamp)::date,
       count(*) FILTER (WHERE category = 'promoter'),
       count(*) FILTER (WHERE category = 'passive'),
       count(*) FILTER (WHERE category = 'detractor'),
       sum(score)
FROM scoring_answers
WHERE is_current AND score IS NOT NULL
GROUP BY 1, 2, 3, 4, 5;
