"""The unit tests run without servers (`make unit`): collecting a unit test that asks, directly
or through another fixture, for PostgreSQL or RabbitMQ stops the run and names the test, which
belongs in tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
SERVER_FIXTURES = ("pg_server", "amqp_server")
"""The fixtures every database and broker fixture of tests/conftest.py starts from."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    needing = [
        f"{item.nodeid} (asks for {', '.join(sorted(servers))})"
        for item in items
        if item.path.resolve().is_relative_to(UNIT)
        and (servers := set(SERVER_FIXTURES) & set(getattr(item, "fixturenames", ())))
    ]
    if needing:
        raise pytest.UsageError(
            "tests/unit runs without PostgreSQL or RabbitMQ; move these tests to"
            " tests/integration:\n  " + "\n  ".join(needing)
        )
