"""`make unit` needs no servers: collecting a unit test that asks for PostgreSQL or RabbitMQ
(tests/unit/conftest.py) stops the run and names it; other unit tests, and integration tests
that ask for the same fixtures, are not named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _collect(tmp_path: Path, tests: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`pytest --collect-only` of a copy of tests/ that holds only `tests` (path: code)."""
    shutil.copytree(
        ROOT / "tests",
        tmp_path / "tests",
        ignore=shutil.ignore_patterns("__pycache__", "test_*.py"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path, code in tests.items():
        (tmp_path / path).write_text(code)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unit_tests_that_ask_for_a_server_are_refused_by_name(tmp_path: Path) -> None:
    result = _collect(
        tmp_path,
        {
            "tests/unit/test_stores.py": (
                "def test_pure(portal_config: object, tmp_path: object) -> None: ...\n"
                "async def test_writes(pool: object) -> None: ...\n"
                "async def test_publishes(channel: object) -> None: ...\n"
                "def test_settles(settings: object) -> None: ...\n"
            ),
            "tests/integration/test_stores.py": (
                "async def test_writes(pool: object, channel: object) -> None: ...\n"
            ),
        },
    )

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "move these tests to tests/integration" in result.stderr
    needing = [line.strip() for line in result.stderr.splitlines() if "(asks for" in line]
    assert needing == [
        "tests/unit/test_stores.py::test_writes (asks for pg_server)",
        "tests/unit/test_stores.py::test_publishes (asks for amqp_server)",
        "tests/unit/test_stores.py::test_settles (asks for amqp_server, pg_server)",
    ]
