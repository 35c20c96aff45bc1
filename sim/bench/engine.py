"""The bench engine: one clock joining delay generator, laser, stage, plasma and spectrometers.

Every delay-generator cycle (T0 pulse) is *processed* exactly once, in time
order, with the instruments in the state they are in at that moment: the
laser is fired if the wiring and timing make a pulse and it can fire; the
stage's position at the pulse is looked up; each armed spectrometer whose
gate output pulses takes a frame slot (unless a missed-trigger fault eats it).
The spectra themselves are rendered later, in batches, when a spectrometer
is read (see :mod:`sim.bench.render`).

The invariant that makes this exact in both clock modes: before any command
reaches an instrument, every cycle up to *now* has been processed, so a
command never changes the past. In real time a thread processes cycles as
they come due (and each command first catches up); in virtual time nothing
happens between commands, and time moves only in :meth:`BenchEngine.advance_to`.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

import numpy as np

from sim.bench.faults import BenchFaults
from sim.bench.render import ShotBatch
from sim.bench.timing import BenchWiring, CycleTiming, TriggerSchedule

log = logging.getLogger(__name__)

# After its gate closes a simulated spectrometer needs this long to hand over the frame.
READOUT_S = 20e-6
# Most cycles processed in one go, to bound memory when a fast internal rate runs long.
_CHUNK = 50_000
# Real time: how often due cycles are processed, and how long to sleep when none is scheduled.
REALTIME_SLICE_S = 0.002
_IDLE_POLL_S = 0.05
INTERLOCK_FAULT = "external_interlock"


class FiredShot(NamedTuple):
    """Ground truth of one laser pulse that reached the sample."""

    shot_id: int      # the delay generator's cycle count (T0 pulses since the bench started)
    t: float          # trigger (T0) time, epoch seconds: the timestamp of its frames
    x_um: float       # stage position at the pulse
    y_um: float


class BenchEngine:
    def __init__(self, *, clock, scene, delay_generator, laser, stage, wiring: BenchWiring,
                 faults: BenchFaults, seed: int, x_axis=(1, 1), y_axis=(2, 1)) -> None:
        self.clock = clock
        self.scene = scene
        self.dg, self.laser, self.stage = delay_generator, laser, stage
        self.wiring, self.faults, self.seed = wiring, faults, seed
        self.x_axis, self.y_axis = x_axis, y_axis
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.schedule = TriggerSchedule(strict=not clock.virtual)
        self.spectrometers: dict[str, object] = {}
        self.fired: list[FiredShot] = []
        self.laser_shots = 0
        self.missed_triggers: list[tuple[int, str]] = []     # (shot id, system)
        self.missed_by_all: set[int] = set()      # shot ids whose trigger every spectrometer misses (tests)
        self.interlock_opened_at: int | None = None
        self._fault_rng = np.random.default_rng([seed, 1])
        self._batches = 0
        self._processed_until = clock.now()
        self.stage_polls = 0        # questions to a moving stage in a row (see sim.bench.links)
        # The stage's position-trigger output is wired to the delay generator's trigger input:
        # (stage device, edge time, cycles it scheduled, generator busy-until before, was armed).
        self._stage_edge: tuple[int, float, np.ndarray, float, bool] | None = None
        self.dg.on_trigger = self._on_software_trigger
        self.reconfigure()

    # ------------------------------------------------------------ commands
    def reconfigure(self) -> None:
        """Re-read the delay generator after a command: timing and schedule hold from now on."""
        with self.lock:
            state = self.dg.state()
            self.timing = CycleTiming.resolve(state, self.wiring)
            holdoff = float(getattr(self.dg.settings, "holdoff_s", 0.0))
            self.schedule.configure(state, self.timing, holdoff, self.clock.now())
            self.changed.notify_all()

    def _on_software_trigger(self, t: float) -> None:
        # Called by the DG645 emulator inside its command handler (our lock is held).
        offsets = np.asarray(self.dg.pulse_times(t)) - t
        used = self.schedule.software_trigger(t, offsets)
        if used is None:
            log.debug("delay generator busy: trigger at %.6f ignored", t)
            return
        if self.clock.virtual:
            self.advance_to(used)
        self.changed.notify_all()

    def settle_stage_edge(self) -> None:
        """Before a stage command: an output edge already passed has used up its trigger."""
        if self._stage_edge is not None and self._stage_edge[1] <= self.clock.now():
            self.stage.trigger_fired(self._stage_edge[0])
            self._stage_edge = None

    def schedule_stage_edge(self) -> None:
        """After a stage command: (re)schedule the delay generator's external trigger at the
        instant the stage's position trigger will fire on the motion as it now is."""
        now = self.clock.now()
        if self._stage_edge is not None:
            _, t_edge, times, busy_until, armed = self._stage_edge
            self._stage_edge = None
            self.schedule.cancel(times, busy_until)
            if armed:
                self.dg.armed = True
        edge = self.stage.output_edge(now)
        if edge is None:
            return
        device, t = edge
        source = int(self.dg.state().trigger_source)
        times, busy_until, armed = np.empty(0), self.schedule.busy_until, False
        # DG645 TSRC 1: every rising edge; TSRC 3: the first rising edge after *TRG armed it.
        if source == 1 or (source == 3 and self.dg.armed):
            offsets = np.asarray(self.dg.pulse_times(t)) - t
            used = self.schedule.software_trigger(t, offsets)
            if used is not None:
                times = used + offsets
                armed = source == 3
                self.dg.armed = False
        self._stage_edge = (device, t, times, busy_until, armed)
        self.changed.notify_all()

    def note_activity(self, role: str) -> None:
        """Anything but the stage happened: whoever polled the stage is doing something else."""
        if role != "stage":
            self.stage_polls = 0

    def catch_up(self) -> None:
        """Process every cycle that is due (real time) before the world changes."""
        with self.lock:
            self._process_until(self.clock.now())

    # ---------------------------------------------------------------- time
    def advance_to(self, t: float) -> None:
        """Virtual time: move the clock to ``t``, processing every cycle on the way."""
        with self.lock:
            self._process_until(t)
            self.clock.advance_to(t)

    def frame_latency(self) -> float:
        """From a T0 pulse to its frames being readable."""
        return self.timing.cycle_s + READOUT_S

    def stage_move_end(self) -> float | None:
        """When the stage's current move ends, if it is moving now."""
        now = self.clock.now()
        ends = [self.stage.axes[a].t_end for a in (self.x_axis, self.y_axis)
                if self.stage.busy(a, now)]
        return max(ends) if ends else None

    # ------------------------------------------------------------ processing
    def _process_until(self, t_end: float) -> None:
        if t_end < self._processed_until:
            return
        while True:
            times, ids, last_internal = self.schedule.take_until(t_end, _CHUNK)
            if last_internal is not None:
                self.dg.register_trigger(last_internal)
            if len(times):
                self._process(times, ids)
                self.changed.notify_all()
            if len(times) < _CHUNK:
                break
        self._processed_until = t_end

    def _process(self, times: np.ndarray, ids: np.ndarray) -> None:
        timing = self.timing
        n = len(times)
        emitted = self._fire_laser(times, timing)
        consumers = self._trigger_spectrometers(ids, timing)
        wanted = np.zeros(n, dtype=bool)
        wanted[emitted] = True
        for indices in consumers.values():
            wanted[indices] = True
        if not wanted.any():
            return
        rows = np.flatnonzero(wanted)
        pulse = times[rows] + (timing.qswitch_s or 0.0)
        x = self._positions_um(pulse, self.x_axis)
        y = self._positions_um(pulse, self.y_axis)
        for r, row in enumerate(rows):
            if emitted[row]:
                self.fired.append(FiredShot(int(ids[row]), float(times[row]), float(x[r]), float(y[r])))
        if not consumers:
            return
        where = np.full(n, -1)
        where[rows] = np.arange(len(rows))
        gates = {system: timing.gate_after_pulse(system) for system in consumers}
        batch = ShotBatch(self.scene, times[rows], ids[rows], x, y, emitted[rows], gates,
                          rng_seed=(self.seed, 2, self._batches))
        self._batches += 1
        for system, indices in consumers.items():
            self.spectrometers[system]._deliver(batch, where[indices])

    def _positions_um(self, t: np.ndarray, axis) -> np.ndarray:
        """Stage positions at many instants at once.

        Commands cannot arrive while cycles are processed, so the move is fixed
        over the batch; it is interpolated in one go, then checked against the
        emulator at both ends so that a richer motion model falls back to asking it.
        """
        move = self.stage.axes[axis]
        scale = self.stage.microstep_um
        if move.t_end > move.t_start:
            steps = np.interp(t, [move.t_start, move.t_end], [move.start_pos, move.target])
        else:
            steps = np.full(len(t), float(move.target))
        positions = steps * scale
        ends = [0, len(t) // 2, len(t) - 1]
        if all(abs(positions[i] - self.stage.position_um_at(float(t[i]), axis)) <= 1e-6 for i in ends):
            return positions
        return np.array([self.stage.position_um_at(float(tp), axis) for tp in t])

    def _fire_laser(self, times: np.ndarray, timing: CycleTiming) -> np.ndarray:
        emitted = np.zeros(len(times), dtype=bool)
        lamp = self.laser.state
        if timing.flashlamp_s is None or not (lamp.flashlamp and lamp.flashlamp_external):
            return emitted  # the laser ignores (or never sees) the trigger pair
        edge = timing.qswitch_s if timing.qswitch_s is not None else timing.flashlamp_s
        interlock_at = self.faults.interlock_at
        for i, t in enumerate(times):
            if (interlock_at is not None and self.interlock_opened_at is None
                    and self.laser_shots == interlock_at and timing.lasing and self.laser.can_fire()):
                self.laser.set_interlock(INTERLOCK_FAULT)
                self.interlock_opened_at = self.laser_shots
                log.warning("fault injected: laser interlock opened before shot %d", self.laser_shots)
            pulsed = self.laser.fire(float(t + edge), qswitch=timing.qswitch_s is not None)
            if pulsed and timing.lasing:
                emitted[i] = True
                self.laser_shots += 1
        return emitted

    def _trigger_spectrometers(self, ids: np.ndarray, timing: CycleTiming) -> dict[str, np.ndarray]:
        armed = [(system, spec) for system, spec in self.spectrometers.items()
                 if spec._waiting_triggers() > 0 and timing.gates.get(system) is not None]
        if not armed:
            return {}
        n = len(ids)
        missed = np.zeros(n, dtype=bool)
        victim = np.zeros(n, dtype=int)
        if self.faults.missed_trigger:
            missed = self._fault_rng.random(n) < self.faults.missed_trigger
            victim = self._fault_rng.integers(len(armed), size=n)
        consumers = {}
        by_all = np.isin(ids, list(self.missed_by_all)) if self.missed_by_all else np.zeros(n, dtype=bool)
        for j, (system, spec) in enumerate(armed):
            lost = (missed & (victim == j)) | by_all
            waiting = spec._waiting_triggers()
            seen = np.flatnonzero(~lost)[:waiting]
            # Once its count is used up a spectrometer no longer listens: later losses are no misses.
            listening = n if len(seen) < waiting else int(seen[-1]) + 1
            for i in np.flatnonzero(lost[:listening]):
                self.missed_triggers.append((int(ids[i]), system))
                log.info("fault injected: %s missed the trigger of shot %d", system, int(ids[i]))
            if len(seen):
                consumers[system] = seen
        return consumers

    # ------------------------------------------------------------- waiting
    def wait_for_frames(self, spec, n: int, timeout_s: float, grace_s: float) -> None:
        """Block until ``spec`` has frames to hand out (called with the lock held).

        Real time: until the first frame or the timeout. Virtual time: jump through the scheduled
        cycles the frames need; if none is scheduled, give other threads
        ``grace_s`` of wall time to trigger, then let the timeout pass virtually.
        """
        if not self.clock.virtual:
            # As a device with a frame buffer: wait for the first frame, then take what is there.
            deadline = self.clock.now() + timeout_s
            while not spec._ready():
                left = deadline - self.clock.now()
                if left <= 0:
                    return
                self.changed.wait(left)
            return
        deadline = self.clock.now() + timeout_s
        self._run_for_frames(spec, n, deadline)
        if spec._ready() == 0 and grace_s > 0:
            # Nothing scheduled can bring a frame; another thread may be about to trigger.
            self.changed.wait(min(grace_s, timeout_s))
            self._run_for_frames(spec, n, deadline)
        if spec._ready() == 0:
            self.advance_to(deadline)

    def _run_for_frames(self, spec, n: int, deadline: float) -> None:
        """Virtual time: run through the scheduled cycles until ``spec`` holds ``n`` frames."""
        while True:
            need = min(n - spec._ready(), spec._waiting_triggers())
            if need <= 0:
                return
            upcoming = self.schedule.upcoming(need)
            if not len(upcoming) or upcoming[0] > deadline:
                return
            target = float(upcoming[-1]) + self.frame_latency()
            self.advance_to(min(target, deadline))
            if target >= deadline:
                return

    # ------------------------------------------------------------ real time
    def run_realtime(self, stop: threading.Event) -> None:
        """Process cycles as they come due until ``stop`` is set (real-time mode only).

        Cycles are taken a few at a time (every ``REALTIME_SLICE_S``) rather than
        one by one, so that spectra are still rendered in batches at a kHz rate;
        commands and reads catch up first, so the slice never changes the physics.
        """
        with self.lock:
            while not stop.is_set():
                self._process_until(self.clock.now())
                nxt = self.schedule.next_time()
                wait = _IDLE_POLL_S if nxt is None else nxt - self.clock.now()
                self.changed.wait(min(_IDLE_POLL_S, max(REALTIME_SLICE_S, wait)))

__all__ = ["BenchEngine", "FiredShot", "READOUT_S"]
