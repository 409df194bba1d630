"""crm_sync: the only writer to Bitrix24; see docs/crm_sync.md and docs/bitrix24-client.md."""
