"""Debian's Chromium for the browser tests: where it is, and the flags every headless run takes
(no first-run work, no background connections: the machine has no network)."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1400",
)


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: run `make tools` (it installs Debian's chromium), then"
            " re-run the dashboard's browser test"
        )
    return path
