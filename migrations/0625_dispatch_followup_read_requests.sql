-- Follow-up (docs/dispatch.md, Follow-up, Read): a read in flight neither loses an update event
-- nor, finishing late, overwrites a newer read.
-- `read_lease`: the lease a claim set `next_read_at` to; while the two are equal the row is
-- claimed, and a read is applied only while its claim is still held (next_read_at = its lease).
-- `read_requested_at`: when the portal last said the entity changed (`read_now`); a claimed row
-- keeps its `next_read_at`, and the read that ends the claim makes it due again when the request
-- came after the claim.

ALTER TABLE dispatch_followups
    ADD COLUMN read_lease timestamptz,
    ADD COLUMN read_requested_at timestamptz;
