"""Fly mode: sweep runs of adjacent spots at constant speed, one laser shot per spot.

For each run (a row, or the part of a row still missing) the stage goes to a
run-up point before the first spot, reads its position back at rest, and
starts towards a point as far beyond the last spot at speed step x rate; the
delay generator then fires one burst of as many cycles as spots, delayed so
that the first laser pulse comes as the stage reaches the first spot.

Positions come from stage read-back and timestamps: the stage moves at a
constant speed from the read-back start, and its position is read once more
just after the trigger; interpolating at the trigger's time gives where the
stage was when the burst started (on the simulated bench's virtual clock no
time passes between commands, so this is exact). Pulse k comes delay +
Q-switch delay + k periods later. The time the stage had already moved when
the trigger arrived is fed back into the next run's burst delay. Each shot is
recorded at the spot it hit, so a late trigger shifts the row instead of
misplacing it, and the spots at its start are swept again.

Gaps: a cycle some system missed leaves its spot unacquired (reported, filled
by --resume). Spots no usable shot hit (the stage stalled, a late trigger
shifted the row, or the cycle offset of the burst is unknown because no system
saw its first or last cycle) are shot step-and-shoot right after the run.
"""

from __future__ import annotations

import logging
import time
import numpy as np

from acquisition.plan import TRAVEL_SPEED_UM_S, FlySegment, fly_segments, run_up_um
from acquisition.bursts import TRANSIENT
from drivers.errors import InstrumentError, StageFault

log = logging.getLogger(__name__)

# A shot computed this far (µm) past the point where the stage stalled still counts as before it.
STALL_TOLERANCE_UM = 0.5
LAG_SMOOTHING = 0.5


class FlyScanner:
    def __init__(self, run) -> None:
        self.map_run = run
        self.rig, self.bursts, self.progress = run.rig, run.bursts, run.progress
        self.systems = run.systems
        self.layout = run.layout
        self.period_s = 1.0 / run.rate_hz
        self.speed = run.settings.step_um[1] * run.rate_hz
        self.reposition_speed = max(self.speed, TRAVEL_SPEED_UM_S)
        self.run_up = run_up_um(run.settings, run.config)
        # The laser pulse (Q-switch) comes this long after the cycle starts; that is when the spot is hit.
        self.pulse_s = run.config.timing.qswitch_delay_s
        self.lag_s = 0.0                 # how long the stage has moved when a trigger arrives
        self._speed_set: float | None = None
        self.position_error_max_um = 0.0       # |recorded - nominal| over the recorded shots
        self.position_error_sum_um = 0.0
        self.position_error_n = 0

    def _set_speed(self, speed: float) -> None:
        if speed != self._speed_set:
            self.map_run.transient(lambda: self.rig.stage.set_speed(speed), "setting the stage speed")
            self._speed_set = speed

    def run(self, missing: np.ndarray) -> None:
        for segment in fly_segments(missing, self.layout, self.run_up):
            self.map_run.stop_flag.check()
            leftovers = self.sweep(segment)
            if len(leftovers):
                # Spots no usable shot hit (a stall, a late trigger, an unknown cycle offset) are shot
                # with the stage at rest: sweeping a few spots again would meet the same timing.
                self.progress.shots_reshot(len(leftovers))
                self.map_run.shoot_spots(leftovers)
                self._speed_set = None

    def sweep(self, seg: FlySegment) -> np.ndarray:
        """Sweep one run; record what paired; return the (iy, ix) that no usable shot hit."""
        n = seg.n_spots
        start, t_move, t_moved, delay = self._start_sweep(seg)
        first = self.bursts.trigger()
        t_trigger = time.perf_counter()
        after, t_after = self._read_position()
        burst = self.bursts.gather(first, n)
        stalled_at = self._wait_for_stage(seg)

        # The x axis starts moving when its command arrives, about a quarter into move_to's two round trips.
        x_trigger = self._interpolate(start[0], (3 * t_move + t_moved) / 4, after, t_after, t_trigger, seg)
        log.debug("row %d, spots %d..%d: first shot id %d, stage at %s, then %s after the trigger; x at "
                  "trigger %.2f, stall at %s", seg.iy, seg.ix[0], seg.ix[-1], first, start, after, x_trigger,
                  stalled_at)
        x_shots = x_trigger + seg.direction * self.speed * (delay + self.pulse_s + np.arange(n) * self.period_s)
        # Each shot belongs to the spot it hit: normally cycle k is spot k of the run, but a
        # trigger that came late (real time) shifts the row, and its start is swept again.
        columns = np.rint((x_shots - self.layout.origin_um[0]) / self.layout.step_um[1]).astype(np.int64)
        usable = np.isin(columns, seg.ix)
        usable[1:] &= columns[1:] != columns[:-1]
        if stalled_at is not None:
            usable &= seg.direction * (x_shots - stalled_at) <= STALL_TOLERANCE_UM
        if burst.laser_fault is not None:
            usable &= np.arange(n) < burst.pulses      # the laser stopped: later cycles were dark
        pairing = burst.pairing
        complete = np.zeros(n, dtype=bool)
        complete[pairing.complete_cycles(self.systems)] = True
        cycles = np.flatnonzero(complete & usable)
        if len(cycles):
            spectra = {s: np.stack([pairing.frames[s][k].counts for k in cycles]) for s in self.systems}
            stamps = [pairing.frames[self.systems[0]][k].timestamp for k in cycles]
            positions = np.column_stack([x_shots[cycles], np.full(len(cycles), start[1])])
            self.map_run.record(np.full(len(cycles), seg.iy), columns[cycles], spectra,
                                first + cycles, stamps, positions)
            self._position_error(x_shots[cycles] - self.layout.x_um[columns[cycles]])
        if burst.laser_fault is not None:
            raise burst.laser_fault
        self.progress.shots_missed(pairing.missed(self.systems))
        hit = np.isin(seg.ix, columns[usable])
        if pairing.ambiguous:
            hit[:] = False
        gaps = int((~complete & usable).sum()) if not pairing.ambiguous else 0
        if gaps:
            self.progress.spots_unfilled(gaps)     # missed triggers stay gaps, for --resume
        leftovers = seg.ix[~hit]
        return np.column_stack([np.full(len(leftovers), seg.iy), leftovers])

    def _position_error(self, error_um: np.ndarray) -> None:
        self.position_error_max_um = max(self.position_error_max_um, float(np.abs(error_um).max()))
        self.position_error_sum_um += float(np.abs(error_um).sum())
        self.position_error_n += len(error_um)

    def _start_sweep(self, seg: FlySegment):
        """Go to the run-up point and set the stage moving across the row; nothing fires yet.

        The sweep command is not simply repeated when its reply is lost: by
        the time a retry went out the stage would be elsewhere than the burst
        expects, so the stage is stopped and the sweep started afresh.
        """
        stage, transient = self.rig.stage, self.map_run.transient
        attempts = self.map_run.settings.retries + 1
        for attempt in range(1, attempts + 1):
            self._set_speed(self.reposition_speed)
            self.map_run.move(lambda: stage.move_to(seg.x_start_um, seg.y_um, wait=True), f"moving to row {seg.iy}")
            start = transient(lambda: stage.position_um, "reading the stage position")
            self._set_speed(self.speed)
            self.bursts.set_burst(seg.n_spots, max(self.run_up / self.speed - self.pulse_s - self.lag_s, 0.0))
            t_move = time.perf_counter()
            try:
                stage.move_to(seg.x_stop_um, seg.y_um, wait=False)
            except TRANSIENT as exc:
                log.warning("row %d: starting the sweep failed (%s); stopping and starting again (%d/%d)",
                            seg.iy, exc, attempt, attempts)
                transient(stage.stop, "stopping the stage")
                continue
            return start, t_move, time.perf_counter(), self.bursts.burst_delay_s
        raise InstrumentError(f"row {seg.iy}: the stage did not accept the sweep in {attempts} attempts")

    def _read_position(self) -> tuple[tuple[float, float] | None, float]:
        """One read-back while sweeping, not retried: a repeated question to a moving stage
        is a wait for it, and it would also come too late to place the trigger."""
        t0 = time.perf_counter()
        try:
            position = self.rig.stage.position_um
        except TRANSIENT as exc:
            log.warning("stage position during the sweep not read (%s); assuming no trigger latency", exc)
            return None, t0
        return position, (t0 + time.perf_counter()) / 2

    def _interpolate(self, x_start: float, t_start: float, after, t_after: float, t_trigger: float,
                     seg: FlySegment) -> float:
        """Stage x at the trigger, between the start of the sweep and the read-back after it.

        The stage moves at constant speed from x_start (read back at rest) from
        t_start on; it has covered at most the host time elapsed since then, in
        whatever clock the bench runs. Updates the lag estimate fed back into the
        burst delay.
        """
        if after is None or t_after <= t_start:
            return x_start
        fraction = min(max((t_trigger - t_start) / (t_after - t_start), 0.0), 1.0)
        x = x_start + fraction * (after[0] - x_start)
        lag = min(max(seg.direction * (x - x_start) / self.speed, 0.0), t_trigger - t_start)
        # A lag beyond the run-up is a one-off (the stage was answered late), not the link's latency.
        self.lag_s += LAG_SMOOTHING * (min(lag, self.run_up / self.speed) - self.lag_s)
        return x_start + seg.direction * lag * self.speed

    def _wait_for_stage(self, seg: FlySegment) -> float | None:
        """Wait for the end of the sweep; the x where the stage stalled, or None."""
        stage = self.rig.stage
        try:
            self.map_run.transient(stage.wait_idle, f"waiting for row {seg.iy} to end")
            return None
        except StageFault as fault:
            x = self.map_run.transient(lambda: stage.position_um, "reading the stage position")[0]
            log.warning("row %d: stage stalled at x = %.1f µm (%s); the rest of the row is swept again",
                        seg.iy, x, fault)
            self.map_run.transient(stage.clear_warnings, "clearing the stage warnings")
            return x
