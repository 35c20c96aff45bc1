"""Fire a burst of delay-generator cycles and collect what the spectrometers saw of it.

Every laser shot of a map is a cycle of a burst that the map starts with one
software trigger: the shots of one step-mode spot, or one fly row. Cycles are
counted here (the delay generator's shot count since the map configured it),
frames are read from every system and placed on the burst's schedule by
timestamp (acquisition.pairing), and the laser's own pulse counter is compared
with the cycles fired, so an interlock that stops the laser mid-burst is
caught before dark frames could be recorded as spots.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Iterator

from acquisition.pairing import BurstPairing, pair_burst
from acquisition.safety import StopFlag, retry
from drivers.dg645 import TriggerSource
from drivers.errors import InstrumentError, InstrumentTimeout, LaserInterlockError, ProtocolError

log = logging.getLogger(__name__)

TRANSIENT = (InstrumentTimeout, ProtocolError)
# Frames still missing once a burst's first and last cycle were seen are waited for this long.
STRAGGLER_S = 0.002
# Frames may come this long after the last cycle of a burst was due.
FRAME_MARGIN_S = 0.5


class _Span:
    """Earliest and latest timestamp of the frames of a burst read so far."""

    def __init__(self) -> None:
        self.first = self.last = None

    def add(self, frames: list) -> None:
        for frame in frames:
            t = frame.timestamp
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)

    def covers(self, n: int, period_s: float) -> bool:
        """The frames span the whole burst (its first and last cycle were seen)."""
        return self.first is not None and (self.last - self.first) >= (n - 1.5) * period_s


@dataclass
class Burst:
    first_cycle: int          # shot id of cycle 0
    pairing: BurstPairing
    pulses: int               # laser pulses counted during the burst
    laser_fault: InstrumentError | None = None   # the laser stopped firing during the burst


class BurstRunner:
    def __init__(self, rig, systems: tuple[str, ...], period_s: float, *, retries: int, stop: StopFlag):
        self.rig = rig
        self.systems = systems
        self.period_s = period_s
        self.retries = retries
        self.stop = stop
        self.cycles = 0
        self.stray_frames = 0
        self._count: int | None = None
        self._delay: float | None = None
        self._laser_count: int | None = None
        self._source: TriggerSource | None = None

    def transient(self, action, what: str):
        return retry(action, what, attempts=self.retries + 1, exceptions=TRANSIENT)

    # ------------------------------------------------------------- set-up
    def set_burst(self, n: int, delay_s: float) -> None:
        dg = self.rig.delay_generator
        if n != self._count:
            self.transient(lambda: setattr(dg, "burst_count", n), "setting the burst count")
            self._count = n
        if self._delay is None or abs(delay_s - self._delay) > 1e-9:
            self.transient(lambda: setattr(dg, "burst_delay_s", delay_s), "setting the burst delay")
            self._delay = delay_s

    def _set_source(self, source: TriggerSource) -> None:
        if source != self._source:
            dg = self.rig.delay_generator
            self.transient(lambda: setattr(dg, "trigger_source", source), "setting the trigger source")
            self._source = source

    @property
    def burst_delay_s(self) -> float:
        return self._delay or 0.0

    def start_laser_count(self) -> None:
        self._laser_count = self.transient(lambda: self.rig.laser.shot_count, "reading the laser shot counter")

    # ------------------------------------------------------------- firing
    def trigger(self) -> int:
        """Start the programmed burst; return the shot id of its first cycle.

        A trigger is never repeated: if the reply to it is lost the burst may
        have run, so the error queue is drained instead and the burst counted.
        """
        dg = self.rig.delay_generator
        self._set_source(TriggerSource.SINGLE_SHOT)
        try:
            dg.trigger()
        except TRANSIENT as exc:
            log.warning("no clean reply to the trigger (%s); checking the error queue", exc)
            self.transient(lambda: dg.check_errors("trigger"), "checking the trigger")
        first = self.cycles
        self.cycles += self._count
        return first

    def arm(self) -> int:
        """Arm the programmed burst to start on the next rising edge at the trigger input (the
        stage's position trigger); return the shot id its first cycle will have. Arming again
        is harmless, so a lost reply is simply retried."""
        dg = self.rig.delay_generator
        self._set_source(TriggerSource.SINGLE_SHOT_EXTERNAL_RISING)
        self.transient(dg.trigger, "arming the burst")
        first = self.cycles
        self.cycles += self._count
        return first

    def disarm(self, first: int) -> None:
        """The armed burst never ran (its edge never came): take back its cycles and disarm."""
        self.cycles = first
        self._set_source(TriggerSource.SINGLE_SHOT)

    def collect(self, n: int, lead_s: float = 0.0) -> dict[str, list]:
        """Frames of the burst just fired (or starting within lead_s), per system, until each has n,
        says no more, or the burst is over."""
        frames: dict[str, list] = {s: [] for s in self.systems}
        for chunk in self.read_out(n, lead_s):
            for system, new in chunk.items():
                frames[system] += new
        return frames

    def read_out(self, n: int, lead_s: float = 0.0, *, chunk_s: float = math.inf,
                 chunk_frames: int | None = None) -> Iterator[dict[str, list]]:
        """The frames of the burst just fired (or starting within lead_s) as they come: yields the
        new frames per system every chunk_s seconds or once a system has chunk_frames new ones,
        whichever comes first (a chunk may be empty), until each system has n, says no more, or
        the burst is over. The time limit is checked between reads: a read that waits for its
        first frame is never cut short, so a system that stops sending ends the burst as before."""
        got = {s: 0 for s in self.systems}
        pending = list(self.systems)
        deadline = time.monotonic() + lead_s + self.burst_delay_s + n * self.period_s + FRAME_MARGIN_S
        cap = n if chunk_frames is None else max(1, int(chunk_frames))
        span = _Span()
        while pending:
            chunk: dict[str, list] = {s: [] for s in self.systems}
            chunk_end = time.monotonic() + chunk_s
            while pending:
                for system in list(pending):
                    want = min(n - got[system], cap - len(chunk[system]))
                    if want <= 0:
                        continue
                    timeout = max(deadline - time.monotonic(), STRAGGLER_S)
                    try:
                        new = self.rig.spectrometers[system].read_batch(want, timeout)
                    except InstrumentTimeout:
                        # Nothing came by the end of the burst (device time): it has no more.
                        pending.remove(system)
                        continue
                    chunk[system] += new
                    got[system] += len(new)
                    span.add(new)
                    if got[system] >= n:
                        pending.remove(system)
                self.stop.check()
                if pending and span.covers(n, self.period_s):
                    for system in pending:
                        try:
                            new = self.rig.spectrometers[system].read_batch(n - got[system], STRAGGLER_S)
                        except InstrumentTimeout:
                            continue
                        chunk[system] += new
                        got[system] += len(new)
                    pending = []
                if time.monotonic() >= chunk_end or any(len(chunk[s]) >= cap for s in self.systems):
                    break
            handed = time.monotonic()
            yield chunk
            # The time the caller took to record the chunk is no time spent waiting for frames:
            # on a virtual clock it did not even pass for the instruments.
            deadline += time.monotonic() - handed

    def pulses_so_far(self) -> int:
        """Laser pulses of the burst running now (since the last one ended), read while it runs."""
        count = self.transient(lambda: self.rig.laser.shot_count, "reading the laser shot counter")
        return count - self._laser_count if self._laser_count is not None else count

    def check_laser(self, n: int) -> tuple[int, InstrumentError | None]:
        """Laser pulses during the last burst, and why not all n fired (None if they did)."""
        laser = self.rig.laser
        count = self.transient(lambda: laser.shot_count, "reading the laser shot counter")
        pulses = count - self._laser_count if self._laser_count is not None else n
        self._laser_count = count
        if pulses >= n:
            return pulses, None
        flags = set(self.transient(laser.interlocks, "reading the laser interlocks"))
        flags.discard("shutter_closed")
        if flags:
            return pulses, LaserInterlockError(flags, f"the laser stopped after {pulses} of {n} pulses")
        return pulses, InstrumentError(f"the laser fired {pulses} of {n} triggered pulses "
                                       "and reports no interlock")

    def gather(self, first: int, n: int, lead_s: float = 0.0) -> Burst:
        """Frames of the burst of n cycles just triggered (or armed to start within lead_s), paired,
        with the laser's pulse count."""
        frames = self.collect(n, lead_s)
        pulses, fault = self.check_laser(n)
        pairing = pair_burst(frames, n, self.period_s)
        self.stray_frames += pairing.stray
        return Burst(first, pairing, pulses, fault)

    def shoot(self, n: int) -> Burst:
        """Fire the programmed burst of n cycles and pair its frames."""
        return self.gather(self.trigger(), n)
