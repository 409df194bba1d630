"""`nps chaos` run as an operator runs it (a real process against the test session's servers),
and the check that the servers hold nothing of the run afterwards (scratch database, vhost,
stack processes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg

from services.harness.scratch import with_path

SCRATCH = re.compile(r"scratch database and vhost: (nps_chaos_[0-9a-f]{8})")


def chaos(logs: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "chaos", "--logs", str(logs), *args]


def environment(pg_server: str, amqp_server: str) -> dict[str, str]:
    return os.environ | {"DATABASE_URL": pg_server, "RABBITMQ_URL": amqp_server}


async def assert_nothing_left(pg_server: str, name: str) -> None:
    admin = await asyncpg.connect(with_path(pg_server, "/postgres"))
    try:
        left = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()
    assert left == 0
    vhosts = subprocess.run(
        ["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert name not in vhosts
    # A stack process still running would have the scratch database's name in its environment.
    using: list[str] = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if name.encode() in environ.read_bytes():
                using.append(environ.parent.name)
        except OSError:
            continue  # gone meanwhile, or not ours to read
    assert using == [], f"processes still running on {name}: {using}"
