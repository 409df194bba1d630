-- Each portal's configuration in application mode (shared/portal_store.py, docs/app.md): the
-- portal YAML of one installed portal, as text (validated exactly like the file before it is
-- stored), edited on the application's settings page. One row per portal key (its member_id); a
-- portal without a row runs on the deployment's portal YAML (NPS_CONFIG) as its template.
CREATE TABLE portal_configs (
    portal     text        PRIMARY KEY,
    yaml       text        NOT NULL,
    version    integer     NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text
);
