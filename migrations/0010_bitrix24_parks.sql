-- Methods parked for a portal's operating-time limit (429 OPERATION_TIME_LIMIT), shared by every
-- process that calls the portal, like the leaky bucket in rate_buckets (DESIGN §6).
CREATE TABLE rate_parks (
    portal  text             NOT NULL,
    method  text             NOT NULL,
    until   double precision NOT NULL,
    PRIMARY KEY (portal, method)
);
