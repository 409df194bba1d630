"""crm_sync: the only writer to Bitrix24 (DESIGN §5, §6); see docs/crm_sync.md."""
