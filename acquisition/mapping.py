"""The paired-map acquisition: prepare, kickoff, complete, stop.

``MapRun`` follows the flyer verbs: ``prepare()`` sets up every instrument
(timing on the delay generator, error queue checked, laser in external
trigger, spectrometers gated, stage homed) and emits ``RunStart``, on which the
map file is created, all before the laser can fire; ``kickoff()`` arms the
spectrometers and starts the laser; ``complete()`` acquires every missing spot;
``stop()`` makes the laser safe first, then stops the stage, then drains the
subscribers and emits ``RunStop``, on which the file is closed, and runs on
every exit path. ``acquire_map()`` wraps the four for callers.

Everything downstream of the instruments is a subscriber of the run's documents
(acquisition.documents): the map file's recorder (acquisition.recorder, the
router's store), the live client (acquisition.live) and, with it, the drift
monitor (acquisition.live_drift), the progress bar, the spot sink of
``on_spot`` and any user callback.

Step mode moves to a spot, waits for the stage, reads its position back and
fires a burst of ``shots`` cycles; the spectra of the shots every system saw
are averaged (so counts stay on the single-shot scale) and recorded with the
shot id and timestamp of the first of them; shots a system missed are fired
again, up to ``max_reshots`` per spot. Fly mode sweeps runs of adjacent spots
at step x rate with one burst per run (acquisition.flyscan) and shoots the
spots a sweep could not record the step-mode way.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from acquisition.bursts import TRANSIENT, BurstRunner
from acquisition.config import AcquisitionSettings, BenchConfig, ConfigError, settings_rate, validate_settings
from acquisition.documents import DocumentRouter, RunStart, RunStop, SpotBatch, Subscriber
from acquisition.flyscan import FlyPlan, FlyScanner
from acquisition.instruments import Rig, configure_timing, open_rig, prepare_spectrometer
from acquisition.live_drift import LiveDrift
from acquisition.live_record import GROUP as LIVE_GROUP
from acquisition.plan import TRAVEL_SPEED_UM_S, check_travel, run_up_um
from acquisition.progress import MapProgress
from acquisition.recorder import MapRecorder, recover_prior_run
from acquisition.safety import AcquisitionAborted, ShutdownChain, SignalGuard, StopFlag, retry
from acquisition.sink import OnSpot, SpotSink
from acquisition.store import MapLayout, PairedMapReader
from drivers.errors import StageFault

if TYPE_CHECKING:
    from acquisition.live import LiveTransfer

log = logging.getLogger(__name__)

ACQUISITION_GROUP = "acquisition"   # /entry/instrument/acquisition: settings and config as JSON


@dataclass
class MapSummary:
    path: str
    total: int
    acquired: int
    acquired_this_run: int
    missed_shots: int
    reshot: int
    gaps: int                          # spots still missing at the end
    complete: bool
    elapsed_s: float
    spots_per_s: float
    stray_frames: int = 0
    position_error_mean_um: float | None = None   # fly mode: |recorded - nominal| position
    position_error_max_um: float | None = None
    sink: dict = field(default_factory=dict)      # on_spot: delivered, dropped, failed
    live: dict = field(default_factory=dict)      # --live: results, spots without one, drift
    # A write failed (disk full...): of `acquired`, this many are safe in the journal only, to be
    # written into the file by --resume or `libs-acquire recover` once there is space.
    spots_in_journal: int = 0
    write_error: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def layout_of(settings: AcquisitionSettings) -> MapLayout:
    return MapLayout(settings.shape, settings.step_um, settings.order, settings.origin_um)


def stored_settings(path: str | Path) -> tuple[AcquisitionSettings, dict]:
    """The settings and bench config a map was started with (for --resume)."""
    with PairedMapReader(path) as reader:
        stored = reader.instrument.get(ACQUISITION_GROUP)
    if not stored or "settings_json" not in stored or "config_json" not in stored:
        raise ConfigError(f"{path}: no acquisition settings under /entry/instrument/{ACQUISITION_GROUP}; "
                          "only maps started by `libs-acquire map` can be resumed")
    return AcquisitionSettings.from_json(stored["settings_json"]), json.loads(stored["config_json"])


def supplied_drift_monitor(subscribers) -> LiveDrift | None:
    """The caller's LiveDrift among `subscribers`, if any; ConfigError for two (a map has one)."""
    supplied = [s for s in subscribers if isinstance(s, LiveDrift)]
    if len(supplied) > 1:
        raise ConfigError(f"{len(supplied)} LiveDrift subscribers: a map has one drift monitor")
    return supplied[0] if supplied else None


def drift_monitor(live: "LiveTransfer | None", subscribers) -> "tuple[LiveDrift | None, list[Subscriber]]":
    """The run's drift monitor and its other subscribers: with live transfer, the caller's LiveDrift
    when one is among `subscribers` (one monitor, one SpotErrors per result), else one with the live
    options' window and threshold."""
    supplied = supplied_drift_monitor(subscribers)
    if live is None:
        return None, list(subscribers)      # nothing to measure; a LiveDrift just listens
    others = [s for s in subscribers if not isinstance(s, LiveDrift)]
    return supplied or LiveDrift(live.options.drift_window, live.options.drift_threshold), others


class MapRun:
    def __init__(self, rig: Rig, config: BenchConfig, settings: AcquisitionSettings, out: str | Path, *,
                 resume: bool = False, on_spot: OnSpot | None = None, show_progress: bool = True,
                 stop_flag: StopFlag | None = None, overwrite: bool = False, live: "LiveTransfer | None" = None,
                 fired_shots: Callable[[int], list] | None = None,
                 subscribers: "list[Subscriber] | tuple" = ()):
        self.rig, self.config, self.settings = rig, config, validate_settings(settings, config)
        self.out, self.resume, self.overwrite = Path(out), resume, overwrite
        self.systems = settings.systems
        self.layout = layout_of(settings)
        self.rate_hz = settings_rate(settings, config)
        self.stop_flag = stop_flag or StopFlag()
        self.live = live
        # a live map's results are measured against the primary measured at the same shot
        self.drift, subscribers = drift_monitor(live, subscribers)
        self.sink = SpotSink(on_spot) if on_spot is not None else None
        self.show_progress = show_progress
        self.recorder = MapRecorder(self.out, overwrite=overwrite)
        self.progress: MapProgress | None = None
        self.bursts = BurstRunner(rig, self.systems, 1.0 / self.rate_hz, retries=settings.retries,
                                  stop=self.stop_flag)
        self.fly: FlyScanner | None = None
        self._shutdown = ShutdownChain()
        self.shutdown_errors: list = []
        # Simulated bench: fired_shots(k) gives its record of every pulse after the first k (shot id,
        # t, x, y), for /entry/sample/true_position.
        self.fired_shots = fired_shots
        # The recorder is the store: it sees every document first (a spot is on disk before
        # anyone hears of it) and its failures stop the run.
        live_subscribers = [live, self.drift] if live is not None else []
        self.documents = DocumentRouter(self.recorder, [*live_subscribers, self._follow, *subscribers])
        self._fired_t = np.empty(0)
        self._fired_xy = np.empty((0, 2))

    def transient(self, action, what: str):
        return self.bursts.transient(action, what)

    def check_stop(self) -> None:
        self.stop_flag.check()

    def move(self, action, what: str) -> None:
        """A stage move that waits; a stall (fault flag) is cleared and the move sent again."""
        stage = self.rig.stage

        def attempt():
            try:
                action()
            except StageFault as fault:
                log.warning("%s: %s; clearing it and moving again", what, fault)
                self.transient(stage.clear_warnings, "clearing the stage warnings")
                raise
        retry(attempt, what, attempts=self.settings.retries + 1, exceptions=TRANSIENT + (StageFault,))

    # ----------------------------------------------------------- prepare
    def prepare(self) -> None:
        """Everything up to a file ready to write; nothing fires."""
        timing = configure_timing(self.rig, self.config, self.systems, self.rate_hz, self.transient)
        laser = self.rig.laser
        self.transient(laser.check_interlocks, "checking the laser interlocks")
        self.transient(lambda: laser.set_external_trigger(flashlamp=True, qswitch=True),
                       "setting the laser to external triggering")
        detectors = {s: prepare_spectrometer(self.rig.spectrometers[s], self.config, s) for s in self.systems}
        stage = self.rig.stage
        if self.transient(lambda: stage.warnings, "reading the stage warnings") & {"WR", "WH"}:
            log.info("stage has no reference position: homing")
            self.move(stage.home, "homing the stage")
        self.documents.emit(self._describe(timing, detectors))     # the recorder creates or resumes the file
        self.progress = MapProgress(self.layout.shape[0] * self.layout.shape[1], self.recorder.n_acquired,
                                    show=self.show_progress, shape=self.layout.shape)
        self.documents.subscribe(self.progress)

    def _describe(self, timing: dict, detectors: dict) -> RunStart:
        """What the run is: its RunStart, with the derived groups the live client needs."""
        wavelengths = {s: np.asarray(self.rig.spectrometers[s].wavelengths(), dtype=np.float64)
                       for s in self.systems}
        instrument: dict = {}
        if self.resume:
            # What a killed writer left in its journal goes into the file first, so the shot count
            # goes on from the file's last shot id: ids stay unique within a map across runs.
            systems, self.bursts.cycles = recover_prior_run(self.out, self.layout, wavelengths)
            if systems != tuple(self.systems):
                raise ConfigError(f"{self.out}: the map holds systems {list(systems)}, not {self.systems}")
        else:
            instrument = self._instrument_settings(timing, detectors)
        derived = models = None
        if self.live is not None:
            derived = self.live.prepare(self.out, self.layout, wavelengths, resume=self.resume)
            models = {LIVE_GROUP: self.live.model_info} if self.live.model_info else None
            if self.resume:
                self.drift.resume_from(self.out)
        return RunStart(str(self.out), self.layout, tuple(self.systems), wavelengths,
                        json.loads(self.settings.to_json()), instrument, self.resume, derived=derived,
                        true_positions=self.fired_shots is not None, models=models)

    def _instrument_settings(self, timing: dict, detectors: dict) -> dict:
        identity = self.rig.identity
        instrument = {
            **detectors,
            "laser": {**identity.get("laser", {}), "trigger": "external flashlamp and Q-switch",
                      "rate_hz": self.rate_hz},
            "delay_generator": timing,
            "stage": {**identity.get("stage", {}), "mode": self.settings.mode, "order": self.settings.order,
                      "run_up_um": run_up_um(self.settings, self.config)},
            ACQUISITION_GROUP: {"settings_json": self.settings.to_json(), "config_json": self.config.to_json()},
        }
        return instrument

    # ----------------------------------------------------------- kickoff
    def kickoff(self) -> None:
        """Arm the spectrometers and start the laser (it fires only on the delay generator's bursts)."""
        for system in self.systems:
            self.rig.spectrometers[system].arm(-1)
        laser = self.rig.laser
        self.transient(lambda: setattr(laser, "shutter_open", True), "opening the laser shutter")
        self.transient(laser.start, "starting the laser")
        self.bursts.start_laser_count()

    # ---------------------------------------------------------- complete
    def complete(self) -> MapSummary:
        missing = self.recorder.missing()
        if self.settings.mode == "step":
            self.shoot_spots(missing)
        else:
            plan = FlyPlan(self.layout, tuple(self.systems), self.rate_hz, run_up_um(self.settings, self.config),
                           self.config.timing.qswitch_delay_s)
            self.fly = FlyScanner(plan, self.rig.stage, self.bursts, self.progress, self)
            self.fly.run(missing)
        return self.summary()

    def shoot_spots(self, spots: np.ndarray) -> None:
        """Step and shoot: each spot in turn, the stage at rest (step mode, and fly mode's leftovers)."""
        stage, shots = self.rig.stage, self.settings.shots
        x_um, y_um = self.layout.x_um, self.layout.y_um
        self.transient(lambda: stage.set_speed(TRAVEL_SPEED_UM_S), "setting the stage speed")
        for iy, ix in spots:
            self.stop_flag.check()
            self.move(lambda: stage.move_to(x_um[ix], y_um[iy], wait=True), f"moving to spot ({iy}, {ix})")
            if self.config.stage.settle_s:
                time.sleep(self.config.stage.settle_s)
            position = self.transient(lambda: stage.position_um, "reading the stage position")
            taken = self._shoot_spot(shots)
            if len(taken) < shots:
                self.progress.spots_unfilled()
                log.warning("spot (%d, %d): only %d of %d shots seen by every system after %d re-shots; "
                            "left unacquired", iy, ix, len(taken), shots, self.settings.max_reshots)
                continue
            spectra = {s: np.mean([frames[s].counts for _, frames in taken], axis=0) for s in self.systems}
            shot_id, first = taken[0]
            self.record([iy], [ix], {s: a[None] for s, a in spectra.items()}, [shot_id],
                        [first[self.systems[0]].timestamp], [position])

    def _shoot_spot(self, shots: int) -> list[tuple[int, dict]]:
        """Shots (shot id, frame per system) every system saw, firing again for those missed."""
        taken: list[tuple[int, dict]] = []
        fired = 0
        while len(taken) < shots and fired < shots + self.settings.max_reshots:
            n = min(shots - len(taken), shots + self.settings.max_reshots - fired)
            self.bursts.set_burst(n, 0.0)
            burst = self.bursts.shoot(n)
            if fired >= shots:
                self.progress.shots_reshot(n)
            fired += n
            if burst.laser_fault is not None:
                raise burst.laser_fault    # the spot is not recorded: some of its frames may be dark
            complete = burst.pairing.complete_cycles(self.systems)
            self.progress.shots_missed(burst.pairing.missed(self.systems))
            taken += [(burst.first_cycle + int(k), {s: burst.pairing.frames[s][int(k)] for s in self.systems})
                      for k in complete]
        return taken

    def record(self, iy, ix, spectra: Mapping[str, np.ndarray], shot_id, timestamp, position) -> None:
        """Spots (all systems of each from one shot), as one SpotBatch: the recorder stores them
        (a failed write stops the map), then every subscriber sees them."""
        stamps = np.asarray(timestamp, np.float64)
        self.documents.emit(SpotBatch(
            np.asarray(iy, np.int64), np.asarray(ix, np.int64), np.asarray(shot_id, np.int64), stamps,
            np.asarray(position, np.float64).reshape(-1, 2), {s: np.asarray(a, np.float32) for s, a in spectra.items()},
            true_position_um=self._true_positions(stamps) if self.fired_shots is not None else None))

    def _follow(self, document) -> None:
        """The spot sink of ``on_spot``: each spot to the user's callback, on the sink's thread."""
        if not isinstance(document, SpotBatch):
            return
        if self.sink is not None:
            for i in range(len(document)):
                self.sink.offer(int(document.iy[i]), int(document.ix[i]), int(document.shot_id[i]),
                                {s: a[i] for s, a in document.spectra.items()})

    # -------------------------------------------------------------- stop
    def stop(self, failure: BaseException | None = None) -> list:
        """Laser safe first, then stage stopped, spectrometers idle, file closed; every step is tried.
        ``failure``: what ended the run, if it did not run to its end (for RunStop)."""
        self.stop_flag.shutting_down = True
        chain = self._shutdown
        chain.add("laser make_safe", self.rig.laser.make_safe, attempts=3)
        chain.add("stage stop", self.rig.stage.stop, attempts=3)
        for system in self.systems:
            chain.add(f"{system} abort", self.rig.spectrometers[system].abort)
        if self.sink is not None:
            chain.add("spot sink close", self.sink.close)
        if self.progress is not None:      # the recorder took RunStart: the file is open
            # The live client's last results reach the file before RunStop closes it.
            chain.add("documents drain", self.documents.drain)
            chain.add("map file close", lambda: self._emit_stop(failure))
        self.shutdown_errors = chain.run()
        if any(name == "laser make_safe" for name, _ in self.shutdown_errors):
            log.critical("THE LASER COULD NOT BE MADE SAFE: check it by hand (shutter, emission)")
        return self.shutdown_errors

    def _emit_stop(self, failure: BaseException | None) -> None:
        if failure is None and self._shutdown.errors:
            failure = self._shutdown.errors[0][1]
        self.documents.emit(_stop_document(self.summary(), failure))

    def _true_positions(self, stamps: np.ndarray) -> np.ndarray:
        """Where the bench says each spot's shot hit (matched by trigger time, which frames carry
        as their timestamp), (x, y) µm [k, 2], NaN where it has no such shot."""
        new = self.fired_shots(len(self._fired_t))
        if new:
            self._fired_t = np.concatenate([self._fired_t, [shot.t for shot in new]])
            self._fired_xy = np.concatenate([self._fired_xy, [(shot.x_um, shot.y_um) for shot in new]])
        shot = _matching(self._fired_t, stamps, tolerance=1e-6)
        positions = np.full((len(stamps), 2), np.nan)
        positions[shot >= 0] = self._fired_xy[shot[shot >= 0]]
        return positions

    def summary(self) -> MapSummary:
        snap = self.progress.snapshot() if self.progress else None
        total = self.layout.shape[0] * self.layout.shape[1]
        recorder = self.recorder
        acquired = recorder.n_acquired
        sink = {}
        if self.sink is not None:
            sink = {"delivered": self.sink.delivered, "dropped": self.sink.dropped, "failed": self.sink.failed}
        return MapSummary(
            path=str(self.out), total=total, acquired=acquired,
            acquired_this_run=snap.done_this_run if snap else 0, missed_shots=snap.missed if snap else 0,
            reshot=snap.reshot if snap else 0, gaps=total - acquired, complete=acquired == total,
            elapsed_s=snap.elapsed_s if snap else 0.0, spots_per_s=snap.rate_spots_s if snap else 0.0,
            stray_frames=self.bursts.stray_frames, sink=sink, live=self._live_summary(),
            spots_in_journal=(acquired - recorder.n_in_file) if recorder.failure is not None else 0,
            write_error=recorder.failure,
            **self._position_errors())

    def _live_summary(self) -> dict:
        if self.live is None:
            return {}
        # what the live client handed over; "written": what the file took of it
        live = self.live.summary()
        errors = live.pop("errors", []) + self.drift.errors
        return {**live, "written": self.recorder.results_written, "drift": self.drift.summary(), "errors": errors}

    def _position_errors(self) -> dict:
        if self.fly is None or not self.fly.position_error_n:
            return {}
        return {"position_error_mean_um": self.fly.position_error_sum_um / self.fly.position_error_n,
                "position_error_max_um": self.fly.position_error_max_um}


def _stop_document(summary: MapSummary, failure: BaseException | None) -> RunStop:
    if failure is None:
        return RunStop(summary.as_dict(), "complete" if summary.complete else "gaps")
    status = "aborted" if isinstance(failure, (AcquisitionAborted, KeyboardInterrupt)) else "failed"
    return RunStop(summary.as_dict(), status, f"{type(failure).__name__}: {failure}")


def _matching(times: np.ndarray, stamps: np.ndarray, tolerance: float) -> np.ndarray:
    """For each stamp, the index of the time (ascending) within tolerance of it, or -1."""
    if not len(times):
        return np.full(len(stamps), -1)
    right = np.clip(np.searchsorted(times, stamps), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    nearest = np.where(np.abs(times[left] - stamps) < np.abs(times[right] - stamps), left, right)
    return np.where(np.abs(times[nearest] - stamps) <= tolerance, nearest, -1)


def acquire_map(out: str | Path, settings: AcquisitionSettings, config: BenchConfig, *, bench=None,
                resume: bool = False, on_spot: OnSpot | None = None, show_progress: bool = True,
                overwrite: bool = False, stop_flag: StopFlag | None = None,
                live: "LiveTransfer | None" = None,
                on_summary: Callable[[MapSummary], None] | None = None,
                subscribers: "list[Subscriber] | tuple" = ()) -> MapSummary:
    """Open the rig, run prepare/kickoff/complete, and stop safely whatever happens.

    ``bench`` is a running simulated bench when the config names ``sim``
    spectrometers. Raises ConfigError (bad config or settings, before anything
    fires), AcquisitionAborted (signal or stop request), LaserInterlockError or
    InstrumentError; in every case the laser was made safe first and the file
    closed with ``acquired`` telling the truth. ``live``: an acquisition.live.LiveTransfer
    that streams each spot's secondary spectrum; its results are recorded in the map, with
    their errors against the primary measured at the same shot (acquisition.live_drift).
    ``on_summary(summary)`` is called once the map file is closed, on every exit path that got
    as far as opening it (an interrupted map too), with the summary of what the file holds.
    ``subscribers``: callables that receive the run's documents (acquisition.documents):
    RunStart once the file is ready, a SpotBatch per group of spots once stored, SpotResults
    (live results), SpotErrors (their errors against the measured primary), RunStop (summary,
    exit status) on every exit path once the file is closed.
    """
    settings = validate_settings(settings, config)
    layout, run_up = layout_of(settings), run_up_um(settings, config)
    check_travel(layout, config.stage.travel_um, run_up)
    supplied_drift_monitor(subscribers)          # two drift monitors: refused before the rig opens
    if resume:
        with PairedMapReader(out) as reader:
            if reader.end_time is not None:
                raise ConfigError(f"{out}: the map is complete (finished {reader.end_time}); nothing to resume")
    stop_flag = stop_flag or StopFlag()
    with SignalGuard(stop_flag):
        rig = open_rig(config, settings.systems, bench=bench, attempts=settings.retries + 1,
                       before_laser=lambda identity: check_travel(layout, identity["stage"]["travel_um"], run_up))
        run = None
        try:
            run = MapRun(rig, config, settings, out, resume=resume, on_spot=on_spot, show_progress=show_progress,
                         stop_flag=stop_flag, overwrite=overwrite, live=live,
                         fired_shots=bench.fired_since if bench is not None else None, subscribers=subscribers)
            run.prepare()
            stop_flag.check()
            run.kickoff()
            run.complete()
        except BaseException as exc:
            failure = exc
            raise
        else:
            failure = None
        finally:
            if run is not None:
                run.stop(failure)
                if run.progress is not None:
                    summary = run.summary()
                    log.info("map %s: %s", out, summary.as_dict())
                    if on_summary is not None:
                        on_summary(summary)
            rig.close()
    if run.shutdown_errors:
        # The map ran, but something of the shutdown (the laser, the file) did not: say so.
        raise run.shutdown_errors[0][1]
    return run.summary()      # after stop: the sinks and the live client have delivered what they could
