"""The chaos stack in application mode, as it would start (nothing started here): the sandbox
with the named portals and the application registered on them, the application before the
pipeline, every process told `NPS_MODE=app` and the sandbox's application credentials; and the
portals' names."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.harness.chaos import fault_stack
from services.harness.portals import MAX_PORTALS, portal_names
from services.harness.stack import APP, CLIENT_ID, CLIENT_SECRET, PIPELINE, Stack


def _stack(tmp_path: Path, portals: tuple[str, ...]) -> Stack:
    return fault_stack("postgresql://db/x", "amqp://mq/x", tmp_path / "p.yaml", tmp_path, portals)


def test_portal_names_are_two_to_the_maximum() -> None:
    assert portal_names(2) == ("alpha", "beta")
    assert len(set(portal_names(MAX_PORTALS))) == MAX_PORTALS
    for count in (0, 1, MAX_PORTALS + 1):
        with pytest.raises(ValueError, match=f"portals: expected 2 to {MAX_PORTALS}.*got {count}"):
            portal_names(count)


def test_application_mode_serves_the_named_portals_with_the_application(tmp_path: Path) -> None:
    stack = _stack(tmp_path, ("alpha", "beta"))
    args = stack.args("sandbox")
    assert stack.start_order() == ("sandbox", APP, *PIPELINE)
    assert "--handler" not in args
    assert args[args.index("--app") + 1] == f"{CLIENT_ID}:{CLIENT_SECRET}"
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--portal"] == ["alpha", "beta"]
    assert args[args.index("--app-install-url") + 1] == f"{stack.app_url}/app/install"
    assert args[args.index("--app-callback-url") + 1] == f"{stack.app_url}/app/events"
    assert stack.args(APP)[-2:] == ["run", "app"]
    assert stack.process(APP).ready_url == f"{stack.app_url}/healthz"
    assert stack.portal_url("beta") == f"{stack.sandbox_url}/p/beta"
    for name in (APP, *PIPELINE):
        env = stack.env(name)
        assert env["NPS_MODE"] == "app"
        assert env["BITRIX24_OAUTH_URL"] == stack.sandbox_url
        assert (env["BITRIX24_CLIENT_ID"], env["BITRIX24_CLIENT_SECRET"]) == (
            CLIENT_ID,
            CLIENT_SECRET,
        )
        assert env["APP_PORT"] == str(stack.ports[APP])


def test_webhook_mode_is_as_before(tmp_path: Path) -> None:
    stack = _stack(tmp_path, ())
    args = stack.args("sandbox")
    assert args[args.index("--handler") + 1] == f"{stack.ingest_url}/webhooks/bitrix24"
    assert stack.start_order() == ("sandbox", *PIPELINE)
    assert "--portal" not in args
    assert "--app" not in args
    env = stack.env("scoring")
    assert env["NPS_MODE"] == "webhook"
    assert env.get("BITRIX24_CLIENT_ID") != CLIENT_ID
