"""Safe shutdown: stop requests from signals, and an ordered shutdown chain.

Signals only set a flag: the acquisition loop polls it between shots, so no
instrument transaction is cut in half and the shutdown chain can still talk to
every instrument. A second signal raises at once, for a loop that is stuck.
The chain runs every step even when one fails, laser first.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class AcquisitionAborted(Exception):
    """The map was stopped on request (a signal or the caller); what was acquired is kept."""

    def __init__(self, reason: str, signal_name: str | None = None):
        super().__init__(reason)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal_name or "", 1)


class StopFlag:
    """A stop request shared by the acquisition loop, signal handlers and other threads."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.signal_name: str | None = None
        # Once shutdown has begun a signal must not cut the chain short.
        self.shutting_down = False

    def request(self, reason: str, signal_name: str | None = None) -> None:
        if not self._event.is_set():
            self.reason, self.signal_name = reason, signal_name
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise AcquisitionAborted(self.reason, self.signal_name)


class SignalGuard:
    """Turns SIGINT and SIGTERM into a stop request while the map runs.

    Only the main thread may install handlers; elsewhere the guard does nothing
    and the caller's own stop() is the way to end a map.
    """

    def __init__(self, flag: StopFlag, signals=(signal.SIGINT, signal.SIGTERM)):
        self.flag = flag
        self.signals = signals
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.flag.shutting_down:
            log.warning("%s received during shutdown: finishing the shutdown first", name)
            self.flag.request(f"stopped by {name}", name)
            return
        if self.flag.is_set():
            raise AcquisitionAborted(f"{name} received twice; stopping at once", name)
        log.warning("%s received: stopping the map (laser made safe first)", name)
        self.flag.request(f"stopped by {name}", name)

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def retry(action: Callable[[], object], what: str, attempts: int = 3, delay_s: float = 0.05,
          exceptions: tuple[type[BaseException], ...] = (Exception,)) -> object:
    """Run action, retrying on `exceptions`; re-raise the last one after `attempts` tries."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except exceptions as exc:
            if attempt >= attempts:
                raise
            log.warning("%s failed (%s), retry %d/%d", what, exc, attempt, attempts - 1)
            time.sleep(delay_s)
    raise ValueError(f"retry of {what}: attempts must be >= 1, got {attempts}")


class ShutdownChain:
    """Ordered shutdown steps; every step runs even if an earlier one failed."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object], int]] = []
        self.errors: list[tuple[str, BaseException]] = []
        self.done = False

    def add(self, name: str, action: Callable[[], object], attempts: int = 1) -> None:
        self._steps.append((name, action, attempts))

    def run(self) -> list[tuple[str, BaseException]]:
        if self.done:
            return self.errors
        self.done = True
        for name, action, attempts in self._steps:
            try:
                retry(action, name, attempts)
            except BaseException as exc:  # noqa: BLE001 - a later step must still run
                self.errors.append((name, exc))
                log.error("shutdown step %r failed: %s", name, exc)
        return self.errors
