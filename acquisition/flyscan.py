"""Fly mode: sweep runs of adjacent spots at constant speed, one laser shot per spot.

For each run (a row, or the part of a row still missing) the stage goes to a
run-up point before the first spot and reads its position back at rest. The
delay generator is armed for one burst of as many cycles as spots, to start on
a rising edge at its trigger input; that input is wired to the stage's digital
output, which the stage's position trigger pulses the instant the x axis
passes a set point. The stage then sweeps at step x rate.

Positions come from the instruments alone, never from when this computer ran:
cycle k's T0 comes k periods after the stage passed the trigger point, and its
laser pulse the Q-switch delay after that, so shot k hit
x_trigger + direction x speed x (Q-switch delay + k x period). The trigger
point is set so that shot 0 hits the first spot. A busy computer can delay
when frames are read, never where a shot lands.

Recording as it goes: the spectrometers are read out while the stage sweeps,
and every chunk of at most READOUT_CHUNK_S of shots (or READOUT_CHUNK_SPOTS
spots) is paired and recorded as it comes, so a crash of this program loses
at most that chunk, not the row. A cycle is recorded once every system is past
it (pairing.StreamPairing), the laser's pulse counter says it fired, and the
stage reports no stall. The cycle offset is taken from the first frames; only
the end of the burst can confirm it (a first cycle that no system saw shifts
everything by one). If the end puts it in doubt, the whole run is shot again
at rest, which replaces what was recorded (the run's progress counts each spot
once); a crash in between would leave those spots one column off, which needs
every system to miss the same first trigger.

Gaps: a cycle some system missed leaves its spot unacquired (reported, filled
by --resume). Spots no usable shot hit (the stage stalled, or the cycle
offset of the burst is unknown because no system saw its first or last cycle)
are shot step-and-shoot right after the run. A stall before the trigger point
fires nothing: the burst is disarmed and the whole run shot step-and-shoot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from acquisition.bursts import TRANSIENT, BurstRunner
from acquisition.pairing import StreamPairing
from acquisition.plan import TRAVEL_SPEED_UM_S, FlySegment, fly_segments
from acquisition.progress import MapProgress
from acquisition.store import MapLayout
from drivers.errors import StageFault

log = logging.getLogger(__name__)

# A shot computed this far (µm) past the point where the stage stalled still counts as before it.
STALL_TOLERANCE_UM = 0.5
LAG_SMOOTHING = 0.5
# Spots are recorded (journalled) as they are read out, in chunks of at most this many seconds of
# shots or this many spots, whichever is less: what a crash of the program can lose.
READOUT_CHUNK_S = 0.1
READOUT_CHUNK_SPOTS = 256


def readout_chunk_spots(rate_hz: float) -> int:
    """Spots in a full readout chunk at this shot rate."""
    return max(1, int(min(READOUT_CHUNK_SPOTS, READOUT_CHUNK_S * rate_hz)))


@dataclass(frozen=True)
class FlyPlan:
    """What a fly scan sweeps: the grid, the systems, the shot rate and the timing it depends on."""

    layout: MapLayout
    systems: tuple[str, ...]
    rate_hz: float
    run_up_um: float
    qswitch_delay_s: float     # the laser pulse comes this long after its cycle starts


class SweepHost(Protocol):
    """What a fly scan needs from the run that owns it, and nothing more."""

    def transient(self, action: Callable, what: str): ...        # one instrument call, retried

    def move(self, action: Callable, what: str) -> None: ...     # a stage move that waits, retried

    def record(self, iy, ix, spectra, shot_id, timestamp, position) -> None: ...

    def shoot_spots(self, spots: np.ndarray) -> None: ...         # step-and-shoot these (iy, ix)

    def check_stop(self) -> None: ...                             # raises when asked to stop


class _Shots:
    """The shots of one sweep: where each hit, which may be recorded, which have been."""

    def __init__(self, seg: FlySegment, first: int, x_trigger: float, y: float, scanner: "FlyScanner") -> None:
        n = seg.n_spots
        self.seg, self.first, self.y, self.scanner = seg, first, y, scanner
        layout = scanner.layout
        self.x = x_trigger + seg.direction * scanner.speed * (scanner.pulse_s + np.arange(n) * scanner.period_s)
        self.columns = np.rint((self.x - layout.origin_um[0]) / layout.dx_um).astype(np.int64)
        self.usable = np.isin(self.columns, seg.ix)
        self.usable[1:] &= self.columns[1:] != self.columns[:-1]
        self.recorded = np.zeros(n, dtype=bool)
        self.recorded_upto = 0        # cycles below this are recorded or never will be

    def stalled_at(self, x_um: float) -> None:
        """Shots computed past the point where the stage stalled hit that point instead."""
        self.usable &= self.seg.direction * (self.x - x_um) <= STALL_TOLERANCE_UM

    def record(self, pairing, cycles: np.ndarray) -> None:
        """Record those of `cycles` (ascending) that every system saw and that are usable."""
        scanner = self.scanner
        if len(cycles):
            self.recorded_upto = int(cycles[-1]) + 1
        slots = [pairing.frames[s] for s in scanner.systems]
        cycles = np.array([k for k in cycles if self.usable[k] and all(k in slot for slot in slots)],
                          dtype=np.int64)
        if not len(cycles):
            return
        spectra = {s: np.stack([slot[k].counts for k in cycles]) for s, slot in zip(scanner.systems, slots)}
        stamps = [slots[0][k].timestamp for k in cycles]
        positions = np.column_stack([self.x[cycles], np.full(len(cycles), self.y)])
        scanner.host.record(np.full(len(cycles), self.seg.iy), self.columns[cycles], spectra,
                            self.first + cycles, stamps, positions)
        self.recorded[cycles] = True
        scanner._position_error(self.x[cycles] - scanner.layout.x_um[self.columns[cycles]])


class FlyScanner:
    def __init__(self, plan: FlyPlan, stage, bursts: BurstRunner, progress: MapProgress, host: SweepHost) -> None:
        self.host = host
        self.stage, self.bursts, self.progress = stage, bursts, progress
        self.systems = plan.systems
        self.layout = plan.layout
        self.period_s = 1.0 / plan.rate_hz
        self.speed = plan.layout.dx_um * plan.rate_hz
        self.reposition_speed = max(self.speed, TRAVEL_SPEED_UM_S)
        self.run_up = plan.run_up_um
        self.pulse_s = plan.qswitch_delay_s
        self.chunk_s = READOUT_CHUNK_S
        self.chunk_spots = readout_chunk_spots(plan.rate_hz)
        self._speed_set: float | None = None
        self.position_error_max_um = 0.0       # |recorded - nominal| over the recorded shots
        self.position_error_sum_um = 0.0
        self.position_error_n = 0

    def _set_speed(self, speed: float) -> None:
        if speed != self._speed_set:
            self.host.transient(lambda: self.stage.set_speed(speed), "setting the stage speed")
            self._speed_set = speed

    def run(self, missing: np.ndarray) -> None:
        for segment in fly_segments(missing, self.layout, self.run_up):
            self.host.check_stop()
            leftovers = self.sweep(segment)
            if len(leftovers):
                # Spots no usable shot hit (a stall, an unknown cycle offset) are shot with the
                # stage at rest: sweeping a few spots again would meet the same trouble.
                self.progress.shots_reshot(len(leftovers))
                self.host.shoot_spots(leftovers)
                self._speed_set = None

    def sweep(self, seg: FlySegment) -> np.ndarray:
        """Sweep one run, recording what pairs as it is read out; return the (iy, ix) that no
        usable shot hit."""
        n = seg.n_spots
        everything = np.column_stack([np.full(n, seg.iy), seg.ix])
        started = self._start_sweep(seg)
        if started is None:
            return everything
        first, x_trigger, y = started
        shots = _Shots(seg, first, x_trigger, y, self)
        log.debug("row %d, spots %d..%d: first shot id %d, trigger at x = %.3f",
                  seg.iy, seg.ix[0], seg.ix[-1], first, x_trigger)
        stream = StreamPairing(self.systems, n, self.period_s)
        for chunk in self.bursts.read_out(n, lead_s=self.run_up / self.speed, chunk_s=self.chunk_s,
                                          chunk_frames=self.chunk_spots):
            stream.add(chunk)
            # The last chunk waits for the end of the burst, a few ms away, whose checks of the
            # laser and the stage it needs anyway: a row of one chunk costs no query more.
            if shots.recorded_upto < stream.settled < n:
                self._record_settled(shots, stream)
        pairing = stream.finish()
        pulses, laser_fault = self.bursts.check_laser(n)
        self.bursts.stray_frames += pairing.stray
        stalled_at = self._wait_for_stage(seg)
        self.host.transient(self.stage.disarm_position_trigger, "disarming the stage trigger")
        if stalled_at is not None and seg.direction * (stalled_at - x_trigger) < 0 and pulses == 0:
            log.warning("row %d: the stage stalled before the trigger point; nothing fired", seg.iy)
            self.bursts.disarm(first)
            return everything
        if stalled_at is not None:
            shots.stalled_at(stalled_at)
        if laser_fault is not None:
            shots.usable &= np.arange(n) < pulses      # the laser stopped: later cycles were dark
        if pairing.ambiguous and shots.recorded_upto:
            # Recorded under the offset its first frames gave, which the burst's span now puts in
            # doubt: every spot of the run is shot again at rest, which replaces them.
            log.warning("row %d: the cycle offset of the burst turned out unknown after %d of its spots "
                        "were recorded; the run is shot again", seg.iy, int(shots.recorded.sum()))
        elif not pairing.ambiguous:
            shots.record(pairing, np.arange(shots.recorded_upto, n))
        if laser_fault is not None:
            raise laser_fault
        self.progress.shots_missed(pairing.missed(self.systems))
        hit = np.isin(seg.ix, shots.columns[shots.usable])
        if pairing.ambiguous:
            hit[:] = False
        complete = np.zeros(n, dtype=bool)
        complete[pairing.complete_cycles(self.systems)] = True
        gaps = int((~complete & shots.usable).sum()) if not pairing.ambiguous else 0
        if gaps:
            self.progress.spots_unfilled(gaps)     # missed triggers stay gaps, for --resume
        leftovers = seg.ix[~hit]
        return np.column_stack([np.full(len(leftovers), seg.iy), leftovers])

    def _record_settled(self, shots: "_Shots", stream: StreamPairing) -> None:
        """Record the cycles every system is done with, up to the last one the laser is known to
        have fired and the stage known to have swept (neither may have stopped since)."""
        upto = min(stream.settled, self.bursts.pulses_so_far())
        if upto <= shots.recorded_upto:
            return
        stall = self._stall_now()
        if stall is not None:
            shots.stalled_at(stall)
        shots.record(stream.pairing, np.arange(shots.recorded_upto, upto))

    def _stall_now(self) -> float | None:
        """Where the stage stalled if it reports a fault now (a stall ends its move for good)."""
        flags = self.host.transient(lambda: self.stage.warnings, "reading the stage warnings")
        if not any(flag.startswith("F") for flag in flags):
            return None
        return self.host.transient(lambda: self.stage.position_um, "reading the stage position")[0]

    def _position_error(self, error_um: np.ndarray) -> None:
        self.position_error_max_um = max(self.position_error_max_um, float(np.abs(error_um).max()))
        self.position_error_sum_um += float(np.abs(error_um).sum())
        self.position_error_n += len(error_um)

    def _start_sweep(self, seg: FlySegment) -> tuple[int, float, float] | None:
        """Go to the run-up point, arm the burst and the stage's position trigger, and start the
        sweep; returns (first shot id, trigger x, row y), or None when the sweep could not be
        started cleanly (the run is then shot step-and-shoot).

        The sweep command is not repeated when its reply is lost: the stage may be moving
        already, and may even have passed the trigger point. It is stopped, the trigger and
        the burst disarmed, and whatever fired drained and discarded.
        """
        stage, transient = self.stage, self.host.transient
        self._set_speed(self.reposition_speed)
        self.host.move(lambda: stage.move_to(seg.x_start_um, seg.y_um, wait=True), f"moving to row {seg.iy}")
        y = transient(lambda: stage.position_um, "reading the stage position")[1]
        self._set_speed(self.speed)
        self.bursts.set_burst(seg.n_spots, 0.0)
        first = self.bursts.arm()
        x_first = self.layout.x_um[seg.ix[0]]
        x_trigger = transient(lambda: stage.arm_position_trigger(
            x_first - seg.direction * self.speed * self.pulse_s, increasing=seg.direction > 0),
            "setting the stage's position trigger")
        try:
            stage.move_to(seg.x_stop_um, seg.y_um, wait=False)
        except TRANSIENT as exc:
            log.warning("row %d: starting the sweep failed (%s); stopping, the row is shot step by step",
                        seg.iy, exc)
            transient(stage.stop, "stopping the stage")
            transient(stage.disarm_position_trigger, "disarming the stage trigger")
            burst = self.bursts.gather(first, seg.n_spots, lead_s=self.run_up / self.speed)
            if burst.pulses == 0:
                self.bursts.disarm(first)
            elif burst.laser_fault is not None:
                raise burst.laser_fault
            self._speed_set = None
            return None
        return first, x_trigger, y

    def _wait_for_stage(self, seg: FlySegment) -> float | None:
        """Wait for the end of the sweep; the x where the stage stalled, or None."""
        stage = self.stage
        try:
            self.host.transient(stage.wait_idle, f"waiting for row {seg.iy} to end")
            return None
        except StageFault as fault:
            x = self.host.transient(lambda: stage.position_um, "reading the stage position")[0]
            log.warning("row %d: stage stalled at x = %.1f µm (%s); the rest of the row is swept again",
                        seg.iy, x, fault)
            self.host.transient(stage.clear_warnings, "clearing the stage warnings")
            return x
