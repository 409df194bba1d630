-- Urgent and bulk lanes in each portal's shared rate budget (docs/crm_sync.md, Lanes): until when
-- each lane has a request waiting, and the credit that keeps bulk's minimum share.
ALTER TABLE rate_buckets
    ADD COLUMN urgent_until double precision NOT NULL DEFAULT 0,
    ADD COLUMN bulk_until   double precision NOT NULL DEFAULT 0,
    ADD COLUMN bulk_credit  double precision NOT NULL DEFAULT 0;

-- Requests counted per lane and minute, and the seconds they waited for the budget (the Ops page's
-- shares of the budget); kept for a day.
CREATE TABLE rate_lane_usage (
    portal   text             NOT NULL,
    lane     text             NOT NULL CHECK (lane IN ('urgent', 'bulk')),
    minute   timestamptz      NOT NULL,
    requests integer          NOT NULL,
    waited_s double precision NOT NULL,
    PRIMARY KEY (portal, lane, minute)
);
