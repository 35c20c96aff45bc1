"""Pairing by shot id: which trigger of a burst each frame belongs to.

Frames are placed on the trigger schedule by their timestamps, never by
counting them: a burst of n cycles runs at t0 + k * period, and a frame with
timestamp t belongs to cycle k = round((t - t0) / period). A system that missed
a trigger simply has no frame at that k, so nothing after it shifts.

t0 is found from the frames themselves, so the spectrometers' clock need not be
the computer's: the earliest frame of all systems is cycle 0 if the frames span
the whole burst (n - 1 periods). If no system saw the first or the last cycle the
offset is unknown; then no frame of the burst is assigned (the spots stay gaps)
rather than risking a shifted pairing.

A burst can also be paired while it runs (``StreamPairing``, fly mode): frames
are placed as they arrive, t0 taken from the first frames of every system, and
a cycle is settled once every system has delivered a frame at or after it (a
system's frames come in trigger order, so no frame of a settled cycle is still
to come). Whether the earliest frame really was cycle 0 is only known at the
end of the burst, from the span; a burst that fails that check is ambiguous, as
above, and its spots are shot again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# A frame further than this fraction of a period from its slot does not belong to the burst.
SLOT_TOLERANCE = 0.25


@dataclass
class BurstPairing:
    n_cycles: int
    period_s: float
    t0: float | None = None                        # time of cycle 0, in the frames' clock
    frames: dict[str, dict[int, object]] = field(default_factory=dict)   # system -> cycle -> Frame
    received: int = 0                              # frames of all systems
    stray: int = 0                                 # frames that fit no cycle of this burst
    ambiguous: bool = False                        # cycle offset unknown: nothing assigned

    def complete_cycles(self, systems) -> np.ndarray:
        """Cycles that every system saw, ascending."""
        if self.ambiguous or not systems:
            return np.empty(0, dtype=np.int64)
        common = set(range(self.n_cycles))
        for system in systems:
            common &= set(self.frames.get(system, {}))
        return np.array(sorted(common), dtype=np.int64)

    def missed(self, systems) -> int:
        """System-cycles with no frame: each one a trigger a spectrometer missed."""
        return max(self.n_cycles * len(systems) - self.received, 0)


def pair_burst(frames_by_system: dict, n_cycles: int, period_s: float) -> BurstPairing:
    """Assign each system's frames (from one burst of ``n_cycles``) to cycles by timestamp."""
    stream = StreamPairing(tuple(frames_by_system), n_cycles, period_s)
    stream.add(frames_by_system)
    return stream.finish()


class StreamPairing:
    """One burst's frames placed on its schedule chunk by chunk, as they are read out."""

    def __init__(self, systems: tuple[str, ...], n_cycles: int, period_s: float) -> None:
        self.systems = tuple(systems)
        self.pairing = BurstPairing(n_cycles, period_s, frames={s: {} for s in self.systems})
        self.settled = 0                       # cycles below this have every frame they will get
        self._waiting = {s: [] for s in self.systems}     # frames read before t0 was known
        self._latest = {s: -1 for s in self.systems}      # latest cycle each system delivered
        self._first = self._last = None                   # earliest and latest timestamp of all

    def add(self, chunk: dict) -> None:
        """New frames per system (each system's in the order it delivered them)."""
        for system, frames in chunk.items():
            if not frames:
                continue
            stamps = [f.timestamp for f in frames]
            self.pairing.received += len(frames)
            low, high = min(stamps), max(stamps)
            self._first = low if self._first is None else min(self._first, low)
            self._last = high if self._last is None else max(self._last, high)
            self._waiting[system] += frames
        if self.pairing.t0 is None and all(self._waiting[s] for s in self.systems):
            self.pairing.t0 = self._first
        if self.pairing.t0 is not None:
            for system in self.systems:
                self._place(system, self._waiting[system])
                self._waiting[system] = []
            self.settled = max(self.settled, min(self._latest.values()) + 1)

    def _place(self, system: str, frames: list) -> None:
        pairing, slots = self.pairing, self.pairing.frames[system]
        for frame in frames:
            position = (frame.timestamp - pairing.t0) / pairing.period_s
            k = int(round(position))
            if abs(position - k) > SLOT_TOLERANCE or not 0 <= k < pairing.n_cycles or k in slots:
                pairing.stray += 1
                continue
            slots[k] = frame
            self._latest[system] = max(self._latest[system], k)

    def finish(self) -> BurstPairing:
        """Every frame is in: check the span, settle every cycle, return the burst's pairing."""
        pairing, n = self.pairing, self.pairing.n_cycles
        self.settled = n
        if self._first is None:
            pairing.ambiguous = n > 0
            return pairing
        span = (self._last - self._first) / pairing.period_s
        if n > 1 and abs(span - (n - 1)) > SLOT_TOLERANCE:
            if span < n - 1:
                log.info("burst of %d: no system saw its first or last cycle; its spots stay gaps", n)
            else:
                log.warning("burst of %d: frames span %.2f periods, more than the burst; its spots stay gaps",
                            n, span)
            pairing.ambiguous = True
            pairing.frames = {s: {} for s in self.systems}
            pairing.stray = 0
            return pairing
        if pairing.t0 is None:        # a system that delivered nothing: place the others' frames now
            pairing.t0 = self._first
            for system in self.systems:
                self._place(system, self._waiting[system])
                self._waiting[system] = []
        if pairing.stray:
            log.warning("burst of %d: %d frame(s) fit no cycle and were dropped", n, pairing.stray)
        return pairing
