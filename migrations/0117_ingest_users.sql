-- Ingest: names of the portal's users that answers name as their responsible manager, read with
-- `user.get` so the dashboard and `nps report --by manager` say who a manager is. A row is wanted
-- (refreshed_at NULL) when an answer first names the user; the sweep loop reads the wanted and
-- the stale ones in batches within the portal's request budget.
CREATE TABLE ingest_users (
    portal       text        NOT NULL,
    user_id      bigint      NOT NULL,
    name         text,
    refreshed_at timestamptz,
    PRIMARY KEY (portal, user_id)
);
