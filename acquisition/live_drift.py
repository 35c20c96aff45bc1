"""The drift monitor of a map with live transfer: a subscriber of the run's documents.

:class:`LiveDrift` keeps the measured primary spectra of the latest ``SpotBatch``
documents (at most ``MAX_WAITING_PRIMARIES`` spots; beyond that the oldest are
forgotten). Each ``SpotResults`` is measured against them, result by result, by
the shot it was made from (``shot_id``; by spot, within this run, for results
without one), with acquisition.shared.drift.DriftMonitor: the measured primary
baseline-corrected as the model's output is, per spot the relative error and
cosine distance. It emits them as one ``SpotErrors`` document through the run's
router, which the map's recorder writes (``live_relative_error``,
``live_cosine_distance``). The monitor's windows, its warning and the warning's
hysteresis are DriftMonitor's; :meth:`LiveDrift.summary` is the run summary's
``live.drift`` (``live_drift_json`` in the file).

The thread that emits documents (the acquisition thread) only pairs results with
their primaries; the measuring (a baseline correction of each primary, about
0.1 ms a spot) is done on the monitor's own thread, a ``SpotResults`` at a time
(the live client emits them at most four times a second), and its ``SpotErrors``
go out with the next document the monitor hears, or on ``drain()`` before
``RunStop``, which waits for the last of them.

``RunStart`` sets it up: the primary's axis from ``RunStart.wavelengths``, the
model's axis and baseline windows from ``RunStart.models["transferred"]`` (the
paper's windows when the model is not known yet). A map without the primary
system has nothing to compare: ``summary()`` is None. On ``--resume``,
:meth:`LiveDrift.resume_from` (before ``RunStart``, while no writer holds the
file) reads the map's earlier errors, so the reference stays the map's first spots.

Without a map, drive it with documents:

    drift = LiveDrift(window=100, threshold=0.5)
    router = DocumentRouter(subscribers=[drift, errors.append])
    router.emit(RunStart(...)); router.emit(SpotBatch(...)); router.emit(SpotResults(...)); router.drain()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Callable

import numpy as np

from acquisition.documents import RunStart, RunStop, SpotBatch, SpotErrors, SpotResults
from acquisition.live_record import ERROR_DATASETS, GROUP, read_earlier_run
from acquisition.shared.drift import DriftMonitor, baseline_windows

log = logging.getLogger(__name__)

# Measured primaries waiting for their result; beyond this the oldest are forgotten.
MAX_WAITING_PRIMARIES = 2048
LOG_INTERVAL_S = 10.0
# drain() waits at most this long for the errors still being measured
DRAIN_TIMEOUT_S = 30.0


class LiveDrift:
    """Per-spot live errors against the measured primary, and drift; see the module docstring."""

    def __init__(self, window: int = 100, threshold: float = 0.5, *, group: str = GROUP) -> None:
        self.window, self.threshold, self.group = int(window), float(threshold), group
        self.monitor: DriftMonitor | None = None
        self.errors: list[str] = []
        self.measured = 0                  # results compared with their measured primary in this run
        self._emit: Callable | None = None
        self._primaries: OrderedDict[int, tuple[int, int, np.ndarray]] = OrderedDict()  # shot -> iy, ix, raw
        self._spot_shot: dict[tuple[int, int], int] = {}     # the waiting primaries' spots -> shot
        self._earlier: tuple[np.ndarray, np.ndarray] | None = None
        self._last_log = time.monotonic()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()     # (SpotResults, primaries) to measure, None: stop
        self._measured: deque[SpotErrors] = deque()             # measured, waiting to be emitted
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()     # the monitor's windows: changed on its thread, read by summary()

    def connect(self, emit: Callable) -> None:
        """The run's router hands its emit() here: errors go out as SpotErrors through it."""
        self._emit = emit

    def resume_from(self, path) -> None:
        """Before a resumed run's RunStart: the errors the map holds, in shot order, start the reference."""
        earlier = read_earlier_run(Path(path))
        order = np.argsort(np.where(earlier.acquired, earlier.shot_id, np.iinfo(np.int64).max), axis=None)
        rel, cos = (earlier.errors.get(name, np.full(earlier.acquired.shape, np.nan, np.float32)).ravel()[order]
                    for name in ERROR_DATASETS)
        self._earlier = (rel, cos)

    # ------------------------------------------------------------------ documents

    def __call__(self, document) -> None:
        if isinstance(document, SpotBatch):
            self._keep(document)
        elif isinstance(document, SpotResults):
            if document.group == self.group and self.monitor is not None:
                self._pair(document)
        elif isinstance(document, RunStart):
            self._start(document)
        elif isinstance(document, RunStop):
            self._stop_thread()
            return
        self._emit_measured()

    def _start(self, start: RunStart) -> None:
        self._stop_thread()
        self._primaries.clear()
        self._spot_shot.clear()
        measured_axis = start.wavelengths.get("primary")
        if measured_axis is None:
            self.monitor = None
            return
        model = (start.models or {}).get(self.group)
        model_axis = None if not model or "primary_wavelengths" not in model else \
            np.asarray(model["primary_wavelengths"], np.float64)
        self.monitor = DriftMonitor(self.window, self.threshold, baseline=baseline_windows(model),
                                    measured_axis=np.asarray(measured_axis, np.float64), model_axis=model_axis)
        if self._earlier is not None:     # the reference stays the map's first spots across runs
            self.monitor.add(*self._earlier)
        self._thread = threading.Thread(target=self._measure_loop, name="live-drift", daemon=True)
        self._thread.start()

    def _keep(self, batch: SpotBatch) -> None:
        """Remember each spot's measured primary until its result comes."""
        primary = batch.spectra.get("primary")
        if self.monitor is None or primary is None:
            return
        primary = np.array(primary, np.float32)       # one copy a batch: the batch's arrays are not ours
        for k, (iy, ix, shot) in enumerate(zip(batch.iy.tolist(), batch.ix.tolist(), batch.shot_id.tolist())):
            self._primaries[shot] = (iy, ix, primary[k])
            self._spot_shot[(iy, ix)] = shot
        while len(self._primaries) > MAX_WAITING_PRIMARIES:
            shot, (iy, ix, _) = self._primaries.popitem(last=False)
            if self._spot_shot.get((iy, ix)) == shot:
                del self._spot_shot[(iy, ix)]

    def _take_primary(self, iy: int, ix: int, shot: int) -> np.ndarray | None:
        if shot < 0:
            shot = self._spot_shot.get((iy, ix), -1)
        waiting = self._primaries.pop(shot, None)
        if waiting is None:
            return None
        if self._spot_shot.get(waiting[:2]) == shot:
            del self._spot_shot[waiting[:2]]
        return waiting[2]

    def _pair(self, results: SpotResults) -> None:
        """Acquisition thread: each result with the measured primary of its shot, to be measured."""
        shots = results.shot_id.tolist() if results.shot_id is not None else [-1] * len(results)
        primaries = [self._take_primary(iy, ix, shot)
                     for iy, ix, shot in zip(results.iy.tolist(), results.ix.tolist(), shots)]
        if self._thread is None:     # drained already: what still comes is measured here
            self._measure(results, primaries)
        else:
            self._jobs.put((results, primaries))

    def _measure_loop(self) -> None:
        """The monitor's thread: measure what was paired, in order, until told to stop."""
        while (job := self._jobs.get()) is not None:
            try:
                self._measure(*job)
            except Exception as exc:  # the map goes on without its drift figures
                self._error(f"drift monitor: {exc}")
                log.exception("live transfer: the drift monitor failed")

    def _measure(self, results: SpotResults, measured: list) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        have = np.array([m is not None for m in measured], bool)
        rel = np.full(len(results), np.nan, np.float32)
        cos = np.full(len(results), np.nan, np.float32)
        if have.any():
            try:
                with self._lock:
                    rel[have], cos[have] = monitor.measure(results.spectra[have],
                                                           np.stack([m for m in measured if m is not None]))
            except ValueError as exc:  # axes that cannot be compared: say so once and stop comparing
                self._error(f"drift monitor off: {exc}")
                log.warning("live transfer: drift monitor off: %s", exc)
                self.monitor = None
                return
            self.measured += int(have.sum())
        with self._lock:
            summary = monitor.summary()
        self._measured.append(SpotErrors(np.asarray(results.iy, np.int64), np.asarray(results.ix, np.int64), rel,
                                         cos, group=self.group, recent_relative_error=summary["recent_relative_error"],
                                         drift=summary["drift"]))
        now = time.monotonic()
        if now - self._last_log > LOG_INTERVAL_S:
            self._last_log = now
            log.info("live transfer: recent relative error %s against the measured primary, drift %s",
                     summary["recent_relative_error"], summary["drift"])

    def _emit_measured(self) -> None:
        """Acquisition thread: what the monitor's thread has measured, out as SpotErrors."""
        while self._measured:
            errors = self._measured.popleft()
            if self._emit is not None:
                self._emit(errors)

    def drain(self) -> None:
        """Before RunStop: wait (bounded) for everything paired to be measured, and emit it."""
        self._stop_thread()
        self._emit_measured()

    def _stop_thread(self) -> None:
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join(DRAIN_TIMEOUT_S)
        if self._thread.is_alive():
            self._error(f"drift monitor: still measuring after {DRAIN_TIMEOUT_S:.0f} s; its last errors are lost")
            log.warning("live transfer: the drift monitor is still measuring after %.0f s", DRAIN_TIMEOUT_S)
        self._thread = None

    def _error(self, text: str) -> None:
        if len(self.errors) < 20 and text not in self.errors:
            self.errors.append(text)

    def summary(self) -> dict | None:
        """The drift monitor's summary (spec/paired-map-hdf5.md, live_drift_json); None: nothing compared."""
        monitor = self.monitor
        if monitor is None:
            return None
        with self._lock:
            return monitor.summary()


__all__ = ["LiveDrift", "MAX_WAITING_PRIMARIES"]
