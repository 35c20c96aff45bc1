"""Drift monitor for live transfer: each live result against the measured primary spectrum of its shot.

Used by acquisition.live when a paired map is acquired with --live, and by the live view. The measured primary
is preprocessed as the model's output is (baseline-corrected counts, by the shared
torch-free helpers of acquisition.shared.spectral).
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from acquisition.shared.spectral import (DEFAULT_BASELINE_WINDOWS, WavelengthMismatchError, baseline_correct,
                                         check_wavelengths, resample)

log = logging.getLogger(__name__)


def baseline_windows(model_info: dict | None, system: str = "primary") -> tuple[int, int]:
    """One system's baseline windows as the model applies them: the model's
    `twinplume.<system>_baseline_windows` (spec/stream-protocol.md, "The model file"), else the
    paper's. ``model_info`` is the worker's control ``model`` reply (None: no worker yet)."""
    windows = (model_info or {}).get(f"{system}_baseline_windows")
    if windows is None:
        if model_info is not None:
            log.info("the model names no %s baseline windows; the measured %s is corrected "
                     "with the paper's %s", system, system, DEFAULT_BASELINE_WINDOWS)
        return DEFAULT_BASELINE_WINDOWS
    if not (isinstance(windows, list) and len(windows) == 2
            and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in windows)):
        log.warning("the model's twinplume.%s_baseline_windows is %r, not two positive integers "
                    "[min_window, smooth_window]; the measured %s is corrected with the paper's %s",
                    system, windows, system, DEFAULT_BASELINE_WINDOWS)
        return DEFAULT_BASELINE_WINDOWS
    return (windows[0], windows[1])


# a warning clears only well below the threshold, so that a drift hovering at it does not warn on every spot
CLEAR_FRACTION = 0.8


class DriftMonitor:
    """Live transfer error against the measured primary spectrum of the same shot.

    The measured primary is baseline-corrected (the paper's baseline, as the model's
    output is) and, when the model's primary axis differs, resampled onto it. Per spot:
    relative error ||y_hat - y|| / ||y|| and cosine distance 1 - cos(y_hat, y). The first
    ``window`` spots are the reference, the last ``window`` the current state; drift is
    the current mean relative error over the reference's, minus one. Crossing
    ``threshold`` logs a warning, once, until the drift falls below
    ``CLEAR_FRACTION`` of the threshold.
    """

    def __init__(self, window: int = 100, threshold: float = 0.5, *, baseline=DEFAULT_BASELINE_WINDOWS,
                 measured_axis: np.ndarray | None = None, model_axis: np.ndarray | None = None):
        self.window, self.threshold, self.baseline = int(window), float(threshold), tuple(int(b) for b in baseline)
        self._correct = lambda x: baseline_correct(x, *self.baseline)
        self._resample = None
        if measured_axis is not None and model_axis is not None and measured_axis.size == model_axis.size:
            try:
                check_wavelengths(model_axis, measured_axis, name="measured primary axis")
            except WavelengthMismatchError:
                self._resample = lambda x: resample(x, measured_axis, model_axis)
        elif measured_axis is not None and model_axis is not None:
            self._resample = lambda x: resample(x, measured_axis, model_axis)
        self.reference: list[tuple[float, float]] = []
        self.recent: deque[tuple[float, float]] = deque(maxlen=self.window)
        self.n = 0
        self.drifting = False
        self.warnings = 0
        self.max_drift: float | None = None

    def measure(self, transferred: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(relative error [k], cosine distance [k]) of transferred [k, n] against raw measured [k, m]."""
        truth = self._correct(np.asarray(measured, np.float32))
        if self._resample is not None:
            truth = self._resample(truth)
        transferred = np.asarray(transferred, np.float64)
        truth = np.asarray(truth, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.linalg.norm(truth, axis=1)
            rel = np.linalg.norm(transferred - truth, axis=1) / norm
            cos = 1.0 - np.einsum("ij,ij->i", transferred, truth) / (np.linalg.norm(transferred, axis=1) * norm)
        self.add(rel, cos)
        return rel.astype(np.float32), cos.astype(np.float32)

    def add(self, rel, cos) -> None:
        for pair in zip(np.asarray(rel, float).tolist(), np.asarray(cos, float).tolist()):
            if not all(np.isfinite(pair)):
                continue
            self.n += 1
            if len(self.reference) < self.window:
                self.reference.append(pair)
            self.recent.append(pair)
        self._check()

    @property
    def drift(self) -> float | None:
        if len(self.reference) < self.window or len(self.recent) < self.window:
            return None
        ref = float(np.mean([r for r, _ in self.reference]))
        return float(np.mean([r for r, _ in self.recent])) / ref - 1.0 if ref > 0 else None

    def _check(self) -> None:
        drift = self.drift
        if drift is None:
            return
        self.max_drift = drift if self.max_drift is None else max(self.max_drift, drift)
        if drift > self.threshold and not self.drifting:
            self.drifting, self.warnings = True, self.warnings + 1
            log.warning("live transfer drifting: relative error of the last %d spots %.3g is %+.0f %% against "
                        "the first %d (threshold %+.0f %%)", self.window, self._mean(self.recent, 0),
                        100 * drift, self.window, 100 * self.threshold)
        elif drift <= CLEAR_FRACTION * self.threshold and self.drifting:
            self.drifting = False
            log.info("live transfer back within the drift threshold (%+.0f %%)", 100 * drift)

    @staticmethod
    def _mean(values, index: int) -> float | None:
        return float(np.mean([v[index] for v in values])) if values else None

    def summary(self) -> dict:
        return {"spots": self.n, "window": self.window, "threshold": self.threshold,
                "baseline_windows": list(self.baseline), "resampled": self._resample is not None,
                "reference_relative_error": self._mean(self.reference, 0),
                "reference_cosine_distance": self._mean(self.reference, 1),
                "recent_relative_error": self._mean(self.recent, 0),
                "recent_cosine_distance": self._mean(self.recent, 1),
                "drift": self.drift, "max_drift": self.max_drift, "drifting": self.drifting,
                "warnings": self.warnings}
