"""Log set-up: no secret reaches a line; standard-library loggers stay quiet below warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.logging import configure_logging, get_logger, redact

ROOT = Path(__file__).resolve().parents[2]


def test_webhook_secrets_and_secret_keys_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", fmt="json")
    get_logger("test").info(
        "portal_call",
        url="https://example.bitrix24.ru/rest/1/k9x7secretcode/crm.item.list",
        app_token="tok-123",
        item_id=7,
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["url"] == "https://example.bitrix24.ru/rest/1/***/crm.item.list"
    assert line["app_token"] == "***"
    assert line["item_id"] == 7
    assert redact("no secret here") == "no secret here"


def test_a_library_that_sets_its_logger_to_debug_stays_quiet_below_warnings() -> None:
    """fast_bitrix24 sets its own logger to DEBUG when imported; only its warnings may show."""
    script = """
import logging
from shared.logging import configure_logging
configure_logging("info", fmt="json")
noisy = logging.getLogger("noisy.library")
noisy.setLevel(logging.DEBUG)
noisy.debug("hidden debug")
noisy.info("hidden info")
noisy.warning("shown warning")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stderr.strip().splitlines() == ["noisy.library WARNING shown warning"]
