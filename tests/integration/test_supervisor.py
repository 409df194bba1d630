"""The supervisor of `nps run all`, the e2e stack and `nps chaos`, on small stand-in processes: a
static HTTP server (ready once it answers) and a sleeper (never ready)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from services.harness.stack import free_port
from shared.supervisor import (
    Listener,
    NotReadyError,
    Process,
    ProcessExitedError,
    StoppingError,
    Supervisor,
)


def server(name: str) -> Process:
    port = free_port()
    return Process(
        name,
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        {},
        f"http://127.0.0.1:{port}/",
        Listener("127.0.0.1", port, f"{name.upper()}_PORT"),
    )


def script(name: str, code: str) -> Process:
    port = free_port()
    return Process(
        name,
        [sys.executable, "-c", code],
        {},
        f"http://127.0.0.1:{port}/",
        Listener("127.0.0.1", port, f"{name.upper()}_PORT"),
    )


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    supervisor = Supervisor()
    try:
        yield supervisor
    finally:
        supervisor.stop_all(timeout_s=5)


def test_processes_start_in_order_ready_and_all_stop(supervisor: Supervisor) -> None:
    first, second = server("first"), server("second")

    supervisor.start_all([first, second])

    assert list(supervisor.procs) == ["first", "second"]
    assert [line.split()[0] for line in supervisor.where()] == ["first", "second"]
    assert f"pid {supervisor.procs['second'].pid} " in supervisor.where()[1]
    supervisor.stop_all()
    assert all(proc.poll() is not None for proc in supervisor.procs.values())


def test_a_process_that_ends_while_starting_is_named_with_its_code(
    supervisor: Supervisor,
) -> None:
    with pytest.raises(ProcessExitedError, match=r"^broken exited with 3$"):
        supervisor.start(script("broken", "raise SystemExit(3)"))


def test_a_process_that_never_answers_is_not_ready(supervisor: Supervisor) -> None:
    with pytest.raises(NotReadyError, match=r"^sleeper did not answer .* within 1 s"):
        supervisor.start(script("sleeper", "import time; time.sleep(60)"), wait_s=1)


def test_stop_all_from_another_thread_ends_a_start_and_starts_nothing_more(
    supervisor: Supervisor,
) -> None:
    stopper = threading.Timer(1.0, supervisor.stop_all)
    stopper.start()

    with pytest.raises(StoppingError):
        supervisor.start(script("sleeper", "import time; time.sleep(60)"))
    stopper.join()

    assert supervisor.procs["sleeper"].poll() is not None
    with pytest.raises(StoppingError):
        supervisor.start(server("late"))
    assert "late" not in supervisor.procs


def test_watch_names_a_process_that_dies(supervisor: Supervisor) -> None:
    supervisor.start_all([server("first"), server("second")])

    supervisor.procs["second"].send_signal(signal.SIGKILL)

    exited = supervisor.watch()
    assert exited is not None
    assert (exited.name, str(exited)) == ("second", "second was killed by SIGKILL")


def test_watch_returns_once_a_stop_is_requested(supervisor: Supervisor) -> None:
    supervisor.start(server("first"))
    threading.Timer(0.5, supervisor.request_stop).start()

    started = time.monotonic()
    assert supervisor.watch() is None
    assert time.monotonic() - started < 5
    assert supervisor.procs["first"].poll() is None  # stopping them is stop_all's part
