"""Spectral preprocessing for the transfer models: baseline correction and scaling.

Public API (used by training, evaluation, export and the bundle):

- The torch-free helpers of :mod:`acquisition.shared.spectral`, re-exported here:
  ``check_spectra``, ``check_wavelengths``, ``resample``, ``baseline_correct``,
  ``estimate_baseline``, ``gaussian_window``, ``gaussian_kernel``, ``SpectraError``,
  ``WavelengthMismatchError`` (one implementation, documented there).
- :class:`BaselineCorrector`, :class:`SpectralScaler` (scikit-learn transformers) and
  :class:`SpectrumPreprocessor` (one system: axis check + baseline + scaling).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from acquisition.shared.spectral import (DEFAULT_BASELINE_WINDOWS, SpectraError, WavelengthMismatchError,
                                         baseline_correct, check_baseline_windows, check_spectra,
                                         check_wavelength_axis, check_wavelengths, estimate_baseline,
                                         gaussian_kernel, gaussian_window, resample)

__all__ = ["BaselineCorrector", "DEFAULT_BASELINE_WINDOWS", "DEFAULT_SCALING", "SCALINGS", "SpectraError",
           "SpectralScaler", "SpectrumPreprocessor", "WavelengthMismatchError", "baseline_correct",
           "check_spectra", "check_wavelength_axis", "check_wavelengths", "estimate_baseline", "gaussian_kernel", "gaussian_window",
           "resample"]

#: "pixel": every pixel its own standard deviation (the paper's standard scaling);
#: "global": every pixel centred on its own mean, all divided by one standard deviation
#: (the root mean variance over pixels), so that line pixels keep their weight over noise.
SCALINGS = ("pixel", "global")
#: The scaling everything uses unless told otherwise ([data] scaling of the transfer config too):
#: on a map from another day per-pixel scaling transfers about seven times worse (docs/transfer.md).
DEFAULT_SCALING = "global"


class BaselineCorrector(TransformerMixin, BaseEstimator):
    """scikit-learn transformer around :func:`baseline_correct` (stateless)."""

    def __init__(self, min_window: int = 100, smooth_window: int = 50):
        self.min_window = min_window
        self.smooth_window = smooth_window

    def fit(self, X, y=None):
        X = check_spectra(X, name="spectra")
        check_baseline_windows(self.min_window, self.smooth_window)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        X = check_spectra(X, getattr(self, "n_features_in_", None), name="spectra")
        return baseline_correct(X, self.min_window, self.smooth_window)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags



# ---------------------------------------------------------------------------- scaling

def _as_chunks(data) -> Iterable[np.ndarray]:
    """An array is one chunk; anything else is iterated as chunks."""
    return (data,) if isinstance(data, np.ndarray) else data


class SpectralScaler(TransformerMixin, BaseEstimator):
    """Standard scaling, fitted in one go or chunk by chunk.

    ``scaling`` says what divides the centred spectra: ``"global"`` (default,
    :data:`DEFAULT_SCALING`) one standard deviation for all pixels, the root of their mean
    variance; ``"pixel"`` (the paper's) each pixel's own standard deviation. Per-pixel
    scaling gives a noise-only pixel the same unit variance as a line; a small background
    change there (another day's stray light) then weighs as much as a line, in the losses
    and in the models' inputs.

    It holds the statistics it was fitted on and nothing else: which statistics scale an
    evaluated dataset (the training ones, or the dataset's own as in the paper) is the
    evaluation's choice (`transfer.predict.protocol_preprocessors`).

    Statistics are merged per chunk in float64 (Chan et al.), so ``partial_fit`` over
    chunks equals ``fit`` on their concatenation. Pixels with zero variance get scale 1.
    """

    def __init__(self, scaling: str = DEFAULT_SCALING):
        self.scaling = scaling

    def _check_scaling(self):
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")

    def _reset(self):
        for attr in ("n_samples_seen_", "mean_", "var_", "scale_", "n_features_in_", "_m2"):
            self.__dict__.pop(attr, None)

    def partial_fit(self, X, y=None):
        self._check_scaling()
        X = check_spectra(X, getattr(self, "n_features_in_", None), name="spectra to fit the scaler")
        k = X.shape[0]
        if k == 0:
            return self
        chunk_mean = X.mean(axis=0, dtype=np.float64)
        chunk_m2 = ((X - chunk_mean) ** 2).sum(axis=0, dtype=np.float64)
        if not hasattr(self, "n_samples_seen_"):
            self.n_features_in_ = X.shape[1]
            self.n_samples_seen_, self.mean_, self._m2 = k, chunk_mean, chunk_m2
        else:
            n = self.n_samples_seen_
            total = n + k
            delta = chunk_mean - self.mean_
            self.mean_ = self.mean_ + delta * (k / total)
            self._m2 = self._m2 + chunk_m2 + delta ** 2 * (n * k / total)
            self.n_samples_seen_ = total
        self.var_ = self._m2 / self.n_samples_seen_
        self.scale_ = _safe_scale(self.var_, self.mean_, self.scaling)
        return self

    def fit(self, X, y=None):
        self._reset()
        return self.partial_fit(X)

    def fit_chunks(self, chunks: Iterable[np.ndarray]):
        """Fit from scratch over an iterable of [k, n_pixels] chunks."""
        self._reset()
        for chunk in chunks:
            self.partial_fit(chunk)
        if not hasattr(self, "mean_"):
            raise SpectraError("no spectra to fit the scaler on")
        return self

    def _fitted(self):
        if not hasattr(self, "mean_"):
            raise RuntimeError("SpectralScaler is not fitted yet")

    def transform(self, X):
        self._fitted()
        X = check_spectra(X, self.n_features_in_, name="spectra to scale", allow_1d=True)
        return (X - self.mean_.astype(X.dtype)) / self.scale_.astype(X.dtype)

    def inverse_transform(self, Z):
        self._fitted()
        Z = check_spectra(Z, self.n_features_in_, name="scaled spectra", allow_1d=True)
        return Z * self.scale_.astype(Z.dtype) + self.mean_.astype(Z.dtype)

    def get_state(self) -> dict:
        """Plain state for a bundle: {"scaling": str, "n_samples_seen": int, "mean": float64[n],
        "var": float64[n], "protocol": "causal"}."""
        self._fitted()
        # "protocol" is no longer the scaler's, but earlier versions require it to load a bundle:
        # written as what a bundle's statistics mean (the training ones), ignored on reading
        return {"scaling": self.scaling, "n_samples_seen": int(self.n_samples_seen_),
                "mean": self.mean_.copy(), "var": self.var_.copy(), "protocol": "causal"}

    @classmethod
    def from_state(cls, state: dict) -> "SpectralScaler":
        # Bundles written before the option existed were all per-pixel. Older states also carry
        # a "protocol" entry; the protocol is the evaluation's choice now, so it is ignored.
        scaler = cls(scaling=str(state.get("scaling", "pixel")))
        scaler._check_scaling()
        mean = np.asarray(state["mean"], dtype=np.float64)
        var = np.asarray(state["var"], dtype=np.float64)
        if mean.ndim != 1 or mean.shape != var.shape or not np.all(np.isfinite(mean)) \
                or not np.all(np.isfinite(var)) or np.any(var < 0):
            raise ValueError("scaler state: mean and var must be finite 1-D arrays of the "
                             f"same length with var >= 0 (got {mean.shape}, {var.shape})")
        scaler.n_samples_seen_ = int(state["n_samples_seen"])
        scaler.n_features_in_ = mean.size
        scaler.mean_, scaler.var_ = mean, var
        scaler._m2 = var * scaler.n_samples_seen_
        scaler.scale_ = _safe_scale(var, mean, scaler.scaling)
        return scaler


def _safe_scale(var: np.ndarray, mean: np.ndarray, scaling: str) -> np.ndarray:
    scale = np.sqrt(var) if scaling == "pixel" else np.full(var.shape, np.sqrt(var.mean()))
    # Constant pixels (e.g. zeroed by the baseline) would divide by ~0; leave them unscaled.
    scale[scale <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
    return scale


class SpectrumPreprocessor:
    """One system's path from raw counts to model inputs, and back.

    ``transform``: check pixel count and finiteness -> baseline correction -> scaling.
    ``inverse_transform``: scaled values -> baseline-corrected counts, the "original
    units" in which metrics are reported (the baseline itself is not restored).
    ``correct``: raw counts -> baseline-corrected counts (the evaluation's ground truth).
    """

    def __init__(self, wavelengths, *, min_window: int = 100, smooth_window: int = 50,
                 scaling: str = DEFAULT_SCALING, scaler: SpectralScaler | None = None, name: str = "spectra"):
        self.wavelengths = check_wavelength_axis(wavelengths, name=f"{name} wavelengths")
        check_baseline_windows(min_window, smooth_window)
        self.min_window, self.smooth_window, self.name = int(min_window), int(smooth_window), name
        self.scaler = scaler if scaler is not None else SpectralScaler(scaling)

    @property
    def n_pixels(self) -> int:
        return self.wavelengths.size

    def check(self, X, wavelengths=None) -> np.ndarray:
        """Validate raw spectra (and, if given, their axis) against this system."""
        if wavelengths is not None:
            check_wavelengths(self.wavelengths, wavelengths, name=f"{self.name} wavelengths")
        return check_spectra(X, self.n_pixels, name=self.name, allow_1d=True)

    def correct(self, X, wavelengths=None) -> np.ndarray:
        return baseline_correct(self.check(X, wavelengths), self.min_window, self.smooth_window)

    def partial_fit(self, X, wavelengths=None) -> "SpectrumPreprocessor":
        self.scaler.partial_fit(self.correct(X, wavelengths))
        return self

    def fit(self, X, wavelengths=None) -> "SpectrumPreprocessor":
        self.scaler.fit(self.correct(X, wavelengths))
        return self

    def transform(self, X, wavelengths=None) -> np.ndarray:
        return self.scaler.transform(self.correct(X, wavelengths))

    def inverse_transform(self, Z) -> np.ndarray:
        return self.scaler.inverse_transform(Z)

    def scaled_zero(self) -> np.ndarray:
        """What zero baseline-corrected counts become per pixel once scaled (-mean / scale):
        the point a gain on the counts multiplies about in scaled units."""
        return self.scaler.transform(np.zeros((1, self.n_pixels), np.float32))[0]

    def refitted(self, raw_chunks) -> "SpectrumPreprocessor":
        """A preprocessor with this one's axis, baseline and scaling, its statistics fitted on
        other raw spectra (an array or an iterable of chunks); this one stays as it is."""
        scaler = SpectralScaler(self.scaler.scaling).fit_chunks(self.correct(chunk) for chunk in _as_chunks(raw_chunks))
        return SpectrumPreprocessor(self.wavelengths, min_window=self.min_window,
                                    smooth_window=self.smooth_window, scaler=scaler, name=self.name)

    def get_state(self) -> dict:
        return {"wavelengths": self.wavelengths.copy(), "min_window": self.min_window,
                "smooth_window": self.smooth_window, "name": self.name,
                "scaler": self.scaler.get_state()}

    @classmethod
    def from_state(cls, state: dict) -> "SpectrumPreprocessor":
        return cls(state["wavelengths"], min_window=int(state["min_window"]),
                   smooth_window=int(state["smooth_window"]), name=str(state.get("name", "spectra")),
                   scaler=SpectralScaler.from_state(state["scaler"]))
