-- The portals the Bitrix24 application is installed on (shared/bitrix24/tokens.py, docs/app.md):
-- one row per portal (member_id), with the OAuth pair the application calls it with, refreshed in
-- place (the new pair committed before it is used), and the portal's application_token that
-- authenticates the events it sends. An uninstalled portal keeps its row without tokens; a
-- revoked one (the OAuth server refused its refresh token) keeps it until it is installed again.
CREATE TABLE bitrix24_app_portals (
    member_id         text        PRIMARY KEY,
    domain            text        NOT NULL,
    client_endpoint   text        NOT NULL,
    access_token      text,
    refresh_token     text,
    expires_at        timestamptz,
    application_token text,
    scope             text        NOT NULL DEFAULT '',
    status            text        NOT NULL
        CHECK (status IN ('installed', 'uninstalled', 'revoked')),
    installed_at      timestamptz NOT NULL DEFAULT now(),
    refreshed_at      timestamptz,
    uninstalled_at    timestamptz,
    revoked_at        timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
