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
    result = BurstPairing(n_cycles, period_s, frames={s: {} for s in frames_by_system})
    stamps = [f.timestamp for frames in frames_by_system.values() for f in frames]
    result.received = len(stamps)
    if not stamps:
        result.ambiguous = n_cycles > 0
        return result
    first, last = min(stamps), max(stamps)
    span = (last - first) / period_s
    if n_cycles > 1 and abs(span - (n_cycles - 1)) > SLOT_TOLERANCE:
        if span < n_cycles - 1:
            log.info("burst of %d: no system saw its first or last cycle; its spots stay gaps", n_cycles)
        else:
            log.warning("burst of %d: frames span %.2f periods, more than the burst; its spots stay gaps",
                        n_cycles, span)
        result.ambiguous = True
        return result
    result.t0 = first
    for system, frames in frames_by_system.items():
        slots = result.frames[system]
        for frame in frames:
            position = (frame.timestamp - first) / period_s
            k = int(round(position))
            if abs(position - k) > SLOT_TOLERANCE or not 0 <= k < n_cycles or k in slots:
                result.stray += 1
                continue
            slots[k] = frame
    if result.stray:
        log.warning("burst of %d: %d frame(s) fit no cycle and were dropped", n_cycles, result.stray)
    return result
