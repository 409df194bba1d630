"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
JSON messages ended by NUL on file descriptors 3 and 4), so a test can click and submit a page
the way a person does, with no browser library (this module holds no tests of its own)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from tests.support.browser import CHROMIUM_FLAGS, chromium


def _above_four(fd: int) -> int:
    """`fd` moved to a descriptor number above the 3 and 4 the shell redirects to (the
    original closed)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Chromium:
    """One headless browser (one profile, its cookies kept) with one page."""

    def __init__(self, profile: Path, log: IO[bytes], timeout_s: float = 60.0) -> None:
        self._timeout_s = timeout_s
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Above 4 so that the shell's redirections to 3 and 4 cannot overwrite one another.
        to_chrome_r, from_chrome_w = _above_four(to_chrome_r), _above_four(from_chrome_w)
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self._proc = subprocess.Popen(
            [
                "/bin/bash",
                "-c",
                script,
                chromium(),
                *CHROMIUM_FLAGS,
                "--window-size=412,915",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
            ],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self._session: str = attached["sessionId"]
        self.send("Page.enable", session=True)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_chrome, 65536)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = False
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._events.append(reply)

    def _wait_for_load(self) -> list[dict[str, Any]]:
        """The events up to the page's load event (taken off the queue)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            for index, event in enumerate(self._events):
                if event.get("method") == "Page.loadEventFired":
                    seen = self._events[: index + 1]
                    del self._events[: index + 1]
                    return seen
            self._events.append(self._read(deadline))

    def open(self, url: str) -> None:
        self._events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        self._wait_for_load()

    def evaluate(self, expression: str) -> Any:
        reply = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
        )
        return reply.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """Click the element (a label, a box, a button) as a person would."""
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.click(); return true; })()"
        )
        assert found, f"no element {selector} on {self.url}"

    def type(self, selector: str, text: str) -> None:
        """Focus the field and type `text` into it."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", {"text": text}, session=True)

    def submit(self, selector: str = "button[type=submit]") -> None:
        """Click the submit button and wait for the page it leads to."""
        self._events.clear()
        self.click(selector)
        self._wait_for_load()

    @property
    def url(self) -> str:
        return str(self.evaluate("location.href"))

    @property
    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))

    def status_of(self, url: str) -> int:
        """The HTTP status of the page `url` opened (from the navigation's response)."""
        self.send("Network.enable", session=True)
        self._events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        statuses = [
            int(event["params"]["response"]["status"])
            for event in self._wait_for_load()
            if event.get("method") == "Network.responseReceived"
            and event["params"]["response"]["url"] == url
        ]
        self.send("Network.disable", session=True)
        assert statuses, f"no response seen for {url}"
        return statuses[-1]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            self._proc.kill()
        self._proc.wait(timeout=30)
        os.close(self._to_chrome)
        os.close(self._from_chrome)
