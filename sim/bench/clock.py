"""Bench clocks: wall time for real-time runs, virtual time for as-fast-as-possible runs.

Both give ``now()`` in seconds since the Unix epoch, because frame timestamps
end up in paired-map files, whose contract wants epoch seconds. The emulators
only ever call ``now()``; who moves a :class:`VirtualClock` forward, and when,
is the bench engine's business (see :mod:`sim.bench.engine`).
"""

from __future__ import annotations

import threading
import time


class RealTimeClock:
    """Wall time: epoch seconds taken once, advanced by the monotonic high-resolution counter.

    Using the counter rather than ``time.time()`` on every call keeps the clock
    monotonic when the system clock is adjusted mid-run.
    """

    virtual = False

    def __init__(self) -> None:
        self._epoch = time.time()
        self._origin = time.perf_counter()

    def now(self) -> float:
        return self._epoch + (time.perf_counter() - self._origin)


class VirtualClock:
    """Time that stands still until the bench moves it, and never runs backwards.

    Offsets from the start are kept separately from the epoch so that sub-µs
    steps are not lost to the rounding of a float near 1.7e9.
    """

    virtual = True

    def __init__(self, start: float | None = None) -> None:
        # Whole seconds: runs started in the same second with the same seed line up exactly.
        self._epoch = float(int(time.time() if start is None else start))
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def epoch(self) -> float:
        return self._epoch

    def now(self) -> float:
        return self._epoch + self._offset

    def advance_to(self, t: float) -> float:
        """Move to clock time ``t`` if it is later than now; return the new now."""
        with self._lock:
            offset = t - self._epoch
            if offset > self._offset:
                self._offset = offset
            return self._epoch + self._offset

    def advance_by(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a virtual clock cannot go back ({seconds} s)")
        with self._lock:
            self._offset += seconds
            return self._epoch + self._offset
