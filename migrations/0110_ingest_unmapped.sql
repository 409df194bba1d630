-- Ingest: NPS items of a category no segment of the portal YAML maps (a new form the marketer
-- added before the YAML learned it). They are held here with the fields read from the portal and
-- submitted again (once) when the configuration maps their category.

-- One row per item: a later state of the item replaces the held one. `released_at` is set when
-- the item was submitted again; a newer state held after that clears it.
CREATE TABLE ingest_unmapped_items (
    portal         text        NOT NULL,
    member_id      text,
    domain         text,
    entity_type_id integer     NOT NULL,
    item_id        bigint      NOT NULL,
    category_id    integer     NOT NULL,
    updated_at     timestamptz NOT NULL,
    fields         jsonb       NOT NULL,
    held_at        timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz,
    PRIMARY KEY (portal, entity_type_id, item_id)
);
CREATE INDEX ingest_unmapped_waiting
    ON ingest_unmapped_items (entity_type_id, category_id) WHERE released_at IS NULL;
