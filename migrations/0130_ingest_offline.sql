-- Ingest: the offline batches reserved on a portal (`event.offline.get` with `clear=0`) and not
-- cleared yet. A batch is recorded as soon as the portal names its process id, before any of its
-- events is stored, so a crash before `event.offline.clear` leaves it here: it is read again
-- with the same process id once its lease has run out, its events dropped as duplicates.
-- `leased_until`: until then the puller that holds it works on it and no other takes it.
CREATE TABLE ingest_offline_batches (
    portal        text        NOT NULL,
    process_id    text        NOT NULL,
    reserved_at   timestamptz NOT NULL DEFAULT now(),
    leased_until  timestamptz NOT NULL,
    PRIMARY KEY (portal, process_id)
);
CREATE INDEX ingest_offline_batches_due ON ingest_offline_batches (portal, leased_until);
