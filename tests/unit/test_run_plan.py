"""`nps run all` waits for ingest on its health port and points the sandbox at the webhook port."""

from __future__ import annotations

from services.cli import _plan
from shared.settings import Settings


def test_ingest_is_awaited_on_its_health_port_and_receives_webhooks_on_its_own() -> None:
    plan = {
        p.name: p
        for p in _plan(
            Settings(
                ingest_port=8100, ingest_health_port=9200, bitrix24_webhook_url=None, _env_file=None
            )
        )
    }
    assert plan["ingest"].url == "http://127.0.0.1:9200/readyz"
    assert "http://127.0.0.1:8100/webhooks/bitrix24" in plan["sandbox"].args
