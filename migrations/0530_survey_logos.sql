-- Each logo a survey e-mail linked to, by the SHA-256 of its bytes: `/logo/<sha256>` keeps
-- answering for e-mails sent before a portal changed its logo.
CREATE TABLE IF NOT EXISTS survey_logos (
    sha256      text PRIMARY KEY,
    media_type  text NOT NULL,
    content     bytea NOT NULL,
    kept_at     timestamptz NOT NULL DEFAULT now()
);
