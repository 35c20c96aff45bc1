"""Waiting for another thread or process to have acted: for a state, with a bound, never a fixed time."""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float = 10.0, what: str = "the condition",
               poll_s: float = 0.01) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s (last: {value!r})")
        time.sleep(poll_s)


class StreamLines:
    """Collects a text stream's lines (a process's stderr or stdout) in a thread, so that a test can wait
    for one with a bound while the process goes on."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, needle: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._thread.is_alive():
            if any(needle in line for line in list(self.lines)):
                return
            time.sleep(0.05)
        if not any(needle in line for line in list(self.lines)):
            raise AssertionError(f"no {needle!r} within {timeout_s} s: {''.join(self.lines)[-2000:]}")

    def finish(self, timeout_s: float = 10.0) -> str:
        """Everything, once the process has closed the stream."""
        self._thread.join(timeout_s)
        return "".join(self.lines)


def StderrLines(process) -> StreamLines:
    return StreamLines(process.stderr)
