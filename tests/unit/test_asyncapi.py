"""The committed AsyncAPI document matches the code, and documents the whole pipeline."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from services.cli import app
from services.router.asyncapi import DOCUMENT, render_document
from shared.events import EVENT_TYPES
from shared.topology import CORE_QUEUES


def test_committed_document_matches_the_code() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render_document(), (
        "docs/asyncapi.json is out of date: run `nps asyncapi` and commit the result"
    )


def test_every_event_queue_and_routing_key_is_documented() -> None:
    document = json.loads(render_document())
    assert {model.__name__ for model in EVENT_TYPES} <= set(document["components"]["schemas"])
    channels = document["channels"]
    for spec in CORE_QUEUES:
        for binding in spec.bindings:
            channel = channels[f"{spec.name}:{binding}"]
            assert channel["address"] == binding
            assert channel["bindings"]["amqp"]["queue"]["name"] == spec.name
    published = {
        channel["address"]
        for name, channel in channels.items()
        if channel["bindings"]["amqp"]["is"] == "routingKey"
    }
    assert {
        "webhook.received",
        "form.submitted",
        "nps.scored.equipment.detractor",
        "nps.scored.cosmetics.promoter",
        "route.service",
        "route.marketing",
        "route.task",
        "route.contact",
        "route.{action}",
        "crm.written.contact",
    } <= published
    assert document["operations"]["route.task"]["bindings"]["amqp"]["mandatory"] is True


def test_check_fails_on_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.json"
    stale.write_text("{}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["asyncapi", "--check", "--output", str(stale)])
    assert result.exit_code == 1
    assert "out of date" in result.output
    written = CliRunner().invoke(app, ["asyncapi", "--output", str(stale)])
    assert written.exit_code == 0
    assert stale.read_text(encoding="utf-8") == render_document()
    checked = CliRunner().invoke(app, ["asyncapi", "--check", "--output", str(stale)])
    assert checked.exit_code == 0, checked.output
