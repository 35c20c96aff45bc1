"""The map file being written, read through SWMR: measured spectra and the live transfer error.

Spots whose result has arrived wait here (at most ``MAX_WAITING``, the oldest dropped and
counted) until the writer has committed their measured primary spectrum; then their
relative error ||transferred - measured|| / ||measured|| is computed as the acquisition's
drift monitor computes it (the measured primary baseline-corrected as the model's output is).
Where the model carries its training mean secondary spectrum, the first ``LINE_CHECK_SPOTS``
measured secondary spectra also tell where the spectrometer's lines sit against the model's
(``secondary_shift_px``; acquisition.shared.alignment), as the acquisition's live client does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict

import numpy as np

from acquisition.shared.alignment import ShiftCheck, model_shift_check, shift_message
from acquisition.shared.drift import DriftMonitor, baseline_windows
from acquisition.shared.spectral import WavelengthMismatchError, baseline_correct, recalibration_resampler

log = logging.getLogger(__name__)

MAX_WAITING = 20_000
# a result whose measured spot does not appear in the file within this long is given up
GIVE_UP_S = 30.0
REFRESH_S = 0.2
#: measured secondary spectra held against the model's training mean (a figure from the 16th on)
LINE_CHECK_SPOTS = 256
LINE_CHECK_MIN_SPOTS = 16


class MeasuredMap:
    """Follows a paired map being written and computes the live transfer error of arriving results."""

    def __init__(self, path, model_info: dict | None = None, *, wait: bool = False):
        self.path = str(path)
        self.reader = None
        self.shape: tuple[int, int] | None = None
        self.systems: tuple[str, ...] = ()
        self.primary = self.secondary = None
        self.problem: str | None = None
        self._inode = None
        self._monitor = None
        self._monitor_axis = None
        self._waiting: OrderedDict[tuple[int, int], tuple[np.ndarray, float]] = OrderedDict()
        self._done_spots: list[np.ndarray] = []
        self._done_errors: list[np.ndarray] = []
        self.dropped = 0
        self.given_up = 0
        self.computed = 0
        #: where the measured secondary's lines sit against the model's, pixels (+: to the red)
        self.secondary_shift_px: float | None = None
        self._lines: tuple[ShiftCheck, object] | None = None     # (check, resampler or None)
        self._lines_seen: np.ndarray | None = None
        self._lines_done = False
        self._lock = threading.Lock()
        self._file_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view-measured", daemon=True)
        self.model_info = model_info
        if not self._open() and not wait:
            # the map store's own message names the file and what is wrong with it
            from acquisition.store import PairedMapError
            raise PairedMapError(self.problem)

    def _open(self) -> bool:
        """Open (or, after the writer replaced the file, reopen) the map; False while it cannot be read yet."""
        from acquisition.store import PairedMapError, PairedMapReader

        try:
            inode = os.stat(self.path).st_ino
            if self.reader is not None and inode == self._inode:
                return True
            reader = PairedMapReader(self.path, live=True)
        except (OSError, PairedMapError, KeyError, ValueError) as exc:
            self.problem = f"{self.path}: {exc}" if self.path not in str(exc) else str(exc)
            return False
        if self.reader is not None:
            self.reader.close()
            log.info("%s was replaced: following the new file", self.path)
        self.reader, self._inode, self.problem = reader, inode, None
        self.shape, self.systems = reader.shape, reader.systems
        self.primary = "primary" if "primary" in self.systems else None
        self.secondary = "secondary" if "secondary" in self.systems else None
        return True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._file_lock:
            if self.reader is not None:
                self.reader.close()

    # -- fed by the result thread

    def add(self, iy: np.ndarray, ix: np.ndarray, spectra: np.ndarray) -> None:
        if self.reader is not None and self.primary is None:
            return
        now = time.monotonic()
        with self._lock:
            for key, spectrum in zip(zip(iy.tolist(), ix.tolist()), spectra):
                self._waiting[key] = (spectrum.copy(), now)
                self._waiting.move_to_end(key)
            while len(self._waiting) > MAX_WAITING:
                self._waiting.popitem(last=False)
                self.dropped += 1

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(iy, ix, relative error) computed since the last call."""
        with self._lock:
            spots, errors = self._done_spots, self._done_errors
            self._done_spots, self._done_errors = [], []
        if not spots:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
        s = np.concatenate(spots)
        return s[:, 0], s[:, 1], np.concatenate(errors)

    # -- on demand (the page's spot request)

    def spot(self, iy: int, ix: int) -> dict:
        """Measured spectra of one spot: raw secondary, baseline-corrected primary (as the error compares)."""
        out: dict = {}
        with self._file_lock:
            if self.reader is None:
                return out
            self.reader.refresh()
            ny, nx = self.shape
            if not (0 <= iy < ny and 0 <= ix < nx) or not self.reader.acquired[iy, ix]:
                return out
            spectra = self.reader.spot(iy, ix)
            axes = {s: self.reader.wavelengths(s) for s in spectra}
        if self.secondary:
            out["secondary"] = (axes[self.secondary], np.asarray(spectra[self.secondary], np.float32))
        if self.primary:
            corrected = self._correct(np.asarray(spectra[self.primary], np.float32)[None])[0]
            out["primary"] = (axes[self.primary], corrected)
        return out

    # -- the thread

    def _correct(self, raw: np.ndarray) -> np.ndarray:
        return baseline_correct(raw, *self._baseline_windows())

    def _baseline_windows(self) -> tuple[int, int]:
        return baseline_windows(self.model_info)

    def _monitor_for(self, n_transferred: int):
        axis = (self.model_info or {}).get("primary_wavelengths")
        axis = np.asarray(axis, float) if isinstance(axis, list) and len(axis) == n_transferred else None
        key = (n_transferred, None if axis is None else axis.size, self._baseline_windows())
        if self._monitor is None or self._monitor_axis != key:
            measured_axis = self.reader.wavelengths(self.primary)
            if axis is None and measured_axis.size != n_transferred:
                return None
            self._monitor = DriftMonitor(baseline=self._baseline_windows(), measured_axis=measured_axis,
                                         model_axis=axis)
            self._monitor_axis = key
        return self._monitor

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self._compute_ready()
            except Exception as exc:  # a file the writer broke must not stop the view
                log.warning("cannot read %s: %s", self.path, exc)
            try:
                self._check_lines()
            except Exception as exc:  # a check: it stops, the view goes on
                self._lines_done = True
                log.warning("cannot tell where the secondary's lines sit in %s: %s", self.path, exc)

    def secondary_shift_note(self) -> str | None:
        """The warning when the secondary's lines sit a quarter pixel or more from the model's."""
        shift = self.secondary_shift_px
        return None if shift is None else shift_message(os.path.basename(self.path), "secondary", shift)

    def _line_check(self):
        """(check, resampler or None) against the model's training mean, once the model is known."""
        check = model_shift_check(self.model_info, LINE_CHECK_SPOTS)
        axis = (self.model_info or {}).get("secondary_wavelengths")
        if check is None or not isinstance(axis, list):
            return None
        measured_axis = self.reader.wavelengths(self.secondary)
        try:
            if measured_axis.size != len(axis):
                raise WavelengthMismatchError(f"{measured_axis.size} pixels, the model's {len(axis)}")
            return check, recalibration_resampler(measured_axis, np.asarray(axis, np.float64))
        except WavelengthMismatchError:
            self._lines_done = True
            return None

    def _check_lines(self) -> None:
        if self._lines_done or self.secondary is None or self.model_info is None:
            return
        with self._file_lock:
            if self.reader is None:
                return
            if self._lines is None:
                self._lines = self._line_check()
                if self._lines is None:
                    return
                self._lines_seen = np.zeros(self.shape, bool)
            check, resample = self._lines
            self.reader.refresh()
            new = np.argwhere(self.reader.acquired & ~self._lines_seen)[: check.max_spots - check.n]
            if not len(new):
                return
            raw = np.stack([np.asarray(self.reader.spot(iy, ix)[self.secondary], np.float32) for iy, ix in new])
        self._lines_seen[new[:, 0], new[:, 1]] = True
        if resample is not None:
            raw = resample(raw)
        check.add(baseline_correct(raw, *baseline_windows(self.model_info, "secondary")))
        if check.n >= LINE_CHECK_MIN_SPOTS:
            shift = check.shift_px()
            self.secondary_shift_px = round(shift, 3) if np.isfinite(shift) else None
        self._lines_done = not check.wants_more

    def _compute_ready(self) -> None:
        with self._file_lock:
            if not self._open():
                return
        if self.primary is None:
            return
        with self._lock:
            if not self._waiting:
                return
            waiting = list(self._waiting.items())
        with self._file_lock:
            self.reader.refresh()
            acquired = self.reader.acquired
            now = time.monotonic()
            ready, gone = [], []
            for key, (spectrum, since) in waiting:
                if acquired[key]:
                    ready.append((key, spectrum))
                elif now - since > GIVE_UP_S:
                    gone.append(key)
            if not ready and not gone:
                return
            measured = [np.asarray(self.reader.spot(*key)[self.primary], np.float32) for key, _ in ready]
        with self._lock:
            for key, _ in ready:
                self._waiting.pop(key, None)
            for key in gone:
                if self._waiting.pop(key, None) is not None:
                    self.given_up += 1
        if not ready:
            return
        transferred = np.stack([s for _, s in ready])
        monitor = self._monitor_for(transferred.shape[1])
        if monitor is None:
            return
        rel, _ = monitor.measure(transferred, np.stack(measured))
        with self._lock:
            self._done_spots.append(np.asarray([k for k, _ in ready], np.int64).reshape(-1, 2))
            self._done_errors.append(rel.astype(np.float32))
            self.computed += len(ready)
