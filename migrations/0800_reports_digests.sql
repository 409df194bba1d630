-- The weekly digest (docs/dashboard.md, The weekly digest): one row per portal and edition (the
-- local day it is scheduled for), written before the e-mail goes out (`sending`) and after
-- (`sent`, or `failed` with the reason), so a restart or a second replica never sends it twice.

CREATE TABLE reports_digests (
    portal      text        NOT NULL,
    edition     date        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    recipients  integer     NOT NULL,
    attempts    integer     NOT NULL DEFAULT 1,
    reason      text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    PRIMARY KEY (portal, edition)
);
