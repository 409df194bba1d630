-- The version of the application each portal runs (shared/bitrix24/tokens.py, docs/app.md): what
-- the portal's ONAPPINSTALL or ONAPPUPDATE named in data[VERSION]; NULL until one did.
ALTER TABLE bitrix24_app_portals ADD COLUMN app_version integer;
