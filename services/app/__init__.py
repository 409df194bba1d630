"""The Bitrix24 application's install and lifecycle endpoints (docs/app.md)."""
