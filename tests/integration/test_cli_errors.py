"""What a person sees when a command cannot do its work: one clear line and an exit code, never
a Python traceback. Each command runs as a real process (`python -m services.cli`), both output
streams captured."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.scoring.handlers import score_submission
from shared.outbox import Outbox
from tests.support.paths import EXAMPLE_CONFIG, ROOT
from tests.support.scoring import make_submission


def nps(*args: str, timeout_s: float = 90.0, **env: str) -> subprocess.CompletedProcess[str]:
    """`nps ARGS` in the repository with `env` over this environment (no `.env` there); in a
    process group of its own, stopped whole if it outlives `timeout_s`."""
    base = {k: v for k, v in os.environ.items() if k != "BITRIX24_WEBHOOK_URL"}
    command = [sys.executable, "-m", "services.cli", *args]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env={**base, "LOG_LEVEL": "warning", "LOG_FORMAT": "json", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def said(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_all_ports(**taken: int) -> dict[str, str]:
    """Free ports for every listener of `nps run all`, except those given."""
    names = (
        "SANDBOX_PORT",
        "INGEST_PORT",
        "SCORING_HEALTH_PORT",
        "ROUTER_HEALTH_PORT",
        "CRM_SYNC_HEALTH_PORT",
        "DISPATCH_HEALTH_PORT",
        "SANDBOX_SMTP_PORT",
        "REPORTS_PORT",
        "INGEST_HEALTH_PORT",
        "SURVEY_PORT",
    )
    return {name: str(taken.get(name) or free_port()) for name in names}


@pytest.mark.parametrize(
    "variable",
    ["REPORTS_PORT", "INGEST_PORT", "SANDBOX_PORT", "ROUTER_HEALTH_PORT", "SANDBOX_SMTP_PORT"],
)
def test_run_all_with_a_port_taken_names_it_and_starts_nothing(
    pg_dsn: str, amqp_url: str, held_port: int, variable: str
) -> None:
    result = nps(
        "run",
        "all",
        timeout_s=60,
        DATABASE_URL=pg_dsn,
        RABBITMQ_URL=amqp_url,
        **run_all_ports(**{variable: held_port}),
    )

    output = said(result)
    assert result.returncode == 1
    assert "is running" not in output
    problem = output.strip().splitlines()
    assert len(problem) == 1, output
    assert str(held_port) in problem[0]
    assert variable in problem[0]


def test_run_all_beside_another_copy_says_so_in_one_line(pg_dsn: str, amqp_url: str) -> None:
    """Every port held, as by a `make run` already running on the same ports."""
    with contextlib.ExitStack() as held:
        ports: dict[str, str] = {}
        for variable in run_all_ports():
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))  # held from the start: no other process can take it
            sock.listen()
            ports[variable] = str(sock.getsockname()[1])

        result = nps(
            "run", "all", timeout_s=60, DATABASE_URL=pg_dsn, RABBITMQ_URL=amqp_url, **ports
        )

    output = said(result)
    assert result.returncode == 1
    problem = output.strip().splitlines()
    assert len(problem) == 1, output
    assert "another b24-nps running?" in problem[0]
    for variable, port in ports.items():
        assert f":{port} ({variable})" in problem[0]


def test_run_all_refuses_one_port_given_twice(pg_dsn: str, amqp_url: str) -> None:
    port = free_port()
    ports = run_all_ports(INGEST_PORT=port, REPORTS_PORT=port)

    result = nps("run", "all", timeout_s=60, DATABASE_URL=pg_dsn, **ports)

    output = said(result)
    assert result.returncode == 1
    assert f"port {port} is given to both ingest and reports" in output


def _with(dsn: str, **parts: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(**parts))


@pytest.mark.parametrize(
    ("case", "code", "expected"),
    [
        ("postgres-down", 1, "cannot reach PostgreSQL"),
        ("unknown-user", 1, 'role "nobody_here" does not exist'),
        ("bad-port", 2, "DATABASE_URL is not a PostgreSQL URL"),
        ("no-scheme", 2, "DATABASE_URL is not a PostgreSQL URL (scheme missing)"),
        ("no-database", 2, "(no database name)"),
    ],
)
def test_migrate_says_what_is_wrong_with_the_database(
    pg_dsn: str, case: str, code: int, expected: str
) -> None:
    host = urlsplit(pg_dsn).hostname or "127.0.0.1"
    url = {
        "postgres-down": f"postgresql://postgres@127.0.0.1:{free_port()}/nps",
        "unknown-user": _with(pg_dsn, netloc=f"nobody_here:pw@{host}:{urlsplit(pg_dsn).port}"),
        "bad-port": f"postgresql://postgres@{host}:notaport/nps",
        "no-scheme": "nps-database",
        "no-database": _with(pg_dsn, path="/"),
    }[case]

    result = nps("migrate", DATABASE_URL=url)

    output = said(result)
    assert result.returncode == code
    assert expected in output
    assert ":pw@" not in output


@pytest.mark.parametrize(
    "command",
    [
        ["conflicts"],
        ["audit", "1"],
        ["undo", "1"],
        ["report"],
        ["sweep"],
        ["run", "scoring"],
        ["run", "reports"],
    ],
    ids=" ".join,
)
def test_commands_say_postgresql_is_unreachable(command: list[str]) -> None:
    result = nps(*command, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nps")

    output = said(result)
    assert result.returncode in {1, 2}
    assert "PostgreSQL" in output
    assert "DATABASE_URL" in output


def test_migrate_says_rabbitmq_is_unreachable(pg_dsn: str) -> None:
    result = nps("migrate", DATABASE_URL=pg_dsn, RABBITMQ_URL=f"amqp://127.0.0.1:{free_port()}/")

    output = said(result)
    assert result.returncode == 1
    assert "cannot declare the topology on RabbitMQ" in output
    assert "RABBITMQ_URL" in output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"portal:\n  plan: standard\n# caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 30)"),
        (None, "is a directory; expected the portal YAML file"),
    ],
    ids=["latin-1", "directory"],
)
def test_config_check_names_an_unreadable_file(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    target = tmp_path / "portal.yaml"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)

    result = nps("config", "check", str(target))

    output = said(result)
    assert result.returncode == 1
    assert f"{target}: {expected}" in output


@pytest.mark.parametrize("command", [["list"], ["show", "some-id"]])
def test_dlq_with_a_queue_that_does_not_exist(amqp_url: str, command: list[str]) -> None:
    result = nps("dlq", *command, "--queue", "crm_sync.actoins", RABBITMQ_URL=amqp_url)

    output = said(result)
    assert result.returncode == 2
    assert "crm_sync.actoins.dlq" in output
    assert "crm_sync.actions" in output


@pytest.fixture(scope="module")
async def scored_portal(pool: asyncpg.Pool) -> str:
    member = f"m-seg-{uuid.uuid4().hex[:10]}"
    await score_submission(
        pool, Outbox(), make_submission(("SERUM", 9), item_id=1, member_id=member)
    )
    return member


@pytest.mark.parametrize("segment", ["Cosmetcs", "99"])
def test_report_with_an_unknown_segment_names_the_known_ones(
    pg_dsn: str, scored_portal: str, segment: str
) -> None:
    result = nps("report", "--segment", segment, "--portal", scored_portal, DATABASE_URL=pg_dsn)

    output = said(result)
    assert result.returncode == 2
    assert f"no segment '{segment}'; known: Cosmetics (10)" in " ".join(output.split())


@pytest.mark.parametrize("segment", ["cosmetics", "10"])
def test_report_with_a_known_segment(pg_dsn: str, scored_portal: str, segment: str) -> None:
    result = nps("report", "--segment", segment, "--portal", scored_portal, DATABASE_URL=pg_dsn)

    assert result.returncode == 0, said(result)
    assert "SERUM" in result.stdout


def test_config_check_with_the_sandbox_reads_the_yaml_nps_run_all_reads(tmp_path: Path) -> None:
    """No config/portal.yaml, no portal URL: the example YAML, as for `make run`."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "portal.example.yaml").write_bytes(EXAMPLE_CONFIG.read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in {"NPS_CONFIG", "BITRIX24_WEBHOOK_URL"}}

    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "config", "check"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, said(result)
    assert "config/portal.example.yaml: OK" in result.stdout
