"""The pipeline's processes under one supervisor: `nps run all`, the test suite's stack, the chaos
command and the benchmarks start, watch and stop them here.

A `Process` says what to run, where it listens and which URL answers once it is ready.
`port_problems` says which ports are taken before anything starts; the `Supervisor` starts the
processes in the order given, each ready before the next, says what runs where, watches them, and
stops them all (SIGTERM, SIGKILL after a grace period, the last started first), also when asked
to from a signal handler or another thread half-way through starting.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_WAIT_S = 60.0
STOP_WAIT_S = 30.0


@dataclass(frozen=True)
class Listener:
    """Where a process listens, and the environment variable that moves it."""

    host: str
    port: int
    variable: str


@dataclass(frozen=True)
class Process:
    """One process: its command line, its environment on top of the supervisor's, the URL shown
    for it, where it listens, and the URL that answers 200 once it is ready (`url` if not given).
    """

    name: str
    args: list[str]
    env: dict[str, str]
    url: str
    listens: Listener
    ready: str | None = None
    also_listens: tuple[Listener, ...] = ()
    """Further ports of the process (ingest's health listener beside its webhook port)."""

    @property
    def ready_url(self) -> str:
        return self.ready or self.url

    @property
    def listeners(self) -> tuple[Listener, ...]:
        return (self.listens, *self.also_listens)


class StoppingError(RuntimeError):
    """The supervisor was asked to stop while a process was starting."""


class ProcessExitedError(RuntimeError):
    """A process ended while it was supposed to run."""

    def __init__(self, name: str, code: int, detail: str = "") -> None:
        super().__init__(f"{name} {_ended(code)}" + (f": {detail}" if detail else ""))
        self.name = name
        self.code = code


def _ended(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code >= 0:
        return f"exited with {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class NotReadyError(RuntimeError):
    """A process runs but did not answer its readiness URL in time."""


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our local http URL
            return bool(response.status == 200)
    except OSError:
        return False


def cannot_listen(listener: Listener) -> str | None:
    """Why a server could not listen on `listener` now (None when it can): bound the way
    uvicorn binds, so a port held by a listening socket counts and one in TIME_WAIT does not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            listener.host, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def port_problems(processes: Sequence[Process]) -> list[str]:
    """What keeps `processes` from listening, naming what moves each port: one line per port
    given twice, and one line for the ports that are taken (all of them when another copy of the
    pipeline runs)."""
    problems: list[str] = []
    taken: list[tuple[Process, Listener, str]] = []
    owners: dict[int, tuple[Process, Listener]] = {}
    for process in processes:
        for listener in process.listeners:
            first, first_listener = owners.setdefault(listener.port, (process, listener))
            if first_listener is not listener:
                problems.append(
                    f"port {listener.port} is given to both {first.name} and {process.name}:"
                    f" set {listener.variable} (or {first_listener.variable}) to another port"
                )
                continue
            why = cannot_listen(listener)
            if why is not None:
                taken.append((process, listener, why))
    if len(taken) == 1:
        process, listener, why = taken[0]
        problems.append(
            f"{process.name} cannot listen on {listener.host}:{listener.port} ({why};"
            f" another b24-nps running?): stop what holds it or set {listener.variable}"
            " to another port"
        )
    elif taken:
        ports = ", ".join(f"{p.name} {at.host}:{at.port} ({at.variable})" for p, at, _ in taken)
        whys = "; ".join(dict.fromkeys(why for _, _, why in taken))
        problems.append(
            f"{len(taken)} ports are taken ({whys}; another b24-nps running?): {ports}:"
            " stop what holds them or set those variables to other ports"
        )
    return problems


class Supervisor:
    """Starts processes, waits until each is ready, watches them and stops them all.

    `environ` is every process's environment before its own `Process.env` (default: this
    process's). With `log_dir`, each process writes to `<log_dir>/<name>.log`; without, to this
    process's terminal.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, log_dir: Path | None = None):
        self.environ = environ
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.processes: dict[str, Process] = {}
        self._stop = threading.Event()
        self._starting = threading.Lock()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, *_signal: object) -> None:
        """Stop starting and watching (safe from a signal handler or another thread);
        `stop_all` then stops what runs."""
        self._stop.set()

    @contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """SIGINT (Ctrl-C) and SIGTERM ask this supervisor to stop while inside the block."""
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self, process: Process, wait_s: float = READY_WAIT_S) -> None:
        """Start `process` and wait until it is ready; a process of the same name is replaced."""
        with self._starting:  # never a process started after stop_all took its list
            if self._stop.is_set():
                raise StoppingError(f"{process.name} not started: stopping")
            env = {**(os.environ if self.environ is None else self.environ), **process.env}
            self.processes[process.name] = process
            if self.log_dir is None:
                self.procs[process.name] = subprocess.Popen(process.args, env=env)  # noqa: S603
            else:
                with (self.log_dir / f"{process.name}.log").open("ab") as log:
                    self.procs[process.name] = subprocess.Popen(  # noqa: S603 - our own args
                        process.args, env=env, stdout=log, stderr=subprocess.STDOUT
                    )
        self.wait_ready(process.name, wait_s)

    def start_all(self, processes: Sequence[Process], wait_s: float = READY_WAIT_S) -> None:
        """Each of `processes` in order, each ready before the next."""
        for process in processes:
            self.start(process, wait_s)

    def wait_ready(self, name: str, wait_s: float = READY_WAIT_S) -> None:
        deadline = time.monotonic() + wait_s
        proc, url = self.procs[name], self.processes[name].ready_url
        while time.monotonic() < deadline:
            if self._stop.is_set():
                raise StoppingError(f"{name} not ready: stopping")
            if proc.poll() is not None:
                raise ProcessExitedError(name, proc.returncode, self.tail(name))
            if answers(url):
                return
            time.sleep(0.2)
        raise NotReadyError(f"{name} did not answer {url} within {wait_s:.0f} s: {self.tail(name)}")

    def watch(self, interval_s: float = 0.3) -> ProcessExitedError | None:
        """Block until a stop is requested (None) or a process ends (which one, and its code)."""
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    return ProcessExitedError(name, proc.returncode)
            self._stop.wait(interval_s)
        return None

    def kill(self, name: str) -> None:
        """A crash: SIGKILL, nothing finishes."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, name: str, timeout_s: float = STOP_WAIT_S) -> int:
        """A deploy: SIGTERM, in-flight work finishes (SIGKILL after `timeout_s`); the exit code."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return int(proc.returncode)

    def stop_all(self, timeout_s: float = STOP_WAIT_S) -> None:
        """Every process stopped, the last started first; a start still under way in another
        thread starts nothing."""
        with self._starting:
            self._stop.set()
        for name in reversed(list(self.procs)):
            self.stop(name, timeout_s)

    def where(self) -> list[str]:
        """What runs where: one line per process, its pid and its URL."""
        return [
            f"  {name:<9} pid {proc.pid:<7} {self.processes[name].url}"
            for name, proc in self.procs.items()
        ]

    def tail(self, name: str, lines: int = 20) -> str:
        """The last lines of `name`'s log ("" without a log directory)."""
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
