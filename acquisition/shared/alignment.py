"""Where a map's lines sit against where the model saw them: a check of the wavelength calibration.

A model learns each line at the pixels of its training day. A spectrometer that drifted since
(a moved fibre, another temperature, a service) and was not recalibrated puts the same lines a
fraction of a pixel to a few pixels away under the same stored axis; every model then transfers
worse, and on the primary no model can know the drift at all (docs/transfer.md, "A spectrometer
recalibrated since training"). :func:`apparent_shift_px` measures that offset from the mean
baseline-corrected spectra alone (cross-correlation, refined to a fraction of a pixel), so
`libs-transfer evaluate` and `predict` and the live client of `libs-acquire map --live` can say
when a spectrometer needs its wavelength axis calibrated.

Sign: positive when the map's lines sit at higher pixel numbers (towards the red) than the
model's. A map whose axis was recalibrated is resampled onto the model's axis first
(transfer.data, acquisition.live), and its lines then sit where the model saw them.
Numpy and scipy only: the live path imports it.
"""

from __future__ import annotations

import logging

import numpy as np

from acquisition.shared.spectral import MAX_RECALIBRATION_PX

log = logging.getLogger(__name__)

#: Lines this far (pixels) from the model's are reported: a quarter of a pixel already costs a
#: line-rich spectrum a good part of its transfer error (docs/transfer.md).
SHIFT_WARNING_PX = 0.25
#: Gaussian sigma (pixels) applied to both spectra before they are compared.
PATTERN_SMOOTHING_PX = 1.0


def apparent_shift_px(reference: np.ndarray, mean: np.ndarray, *, max_shift_px: float = MAX_RECALIBRATION_PX) -> float:
    """How many pixels the lines of ``mean`` sit from those of ``reference`` (two mean
    baseline-corrected spectra on one pixel grid); NaN when either has no structure."""
    reference = np.asarray(reference, np.float64)
    mean = np.asarray(mean, np.float64)
    if reference.shape != mean.shape or reference.ndim != 1:
        raise ValueError(f"two spectra of one length are needed, got {reference.shape} and {mean.shape}")
    from scipy.ndimage import gaussian_filter1d

    lags = int(np.ceil(max_shift_px)) + 1
    # a detector's fixed pattern (dark signal, pixel response) is the same on both days and
    # pulls a correlation towards zero shift; lines are a few pixels wide, the pattern one:
    # smoothing over a pixel keeps the lines and drops most of the pattern
    a = gaussian_filter1d(reference - reference.mean(), PATTERN_SMOOTHING_PX)
    b = gaussian_filter1d(mean - mean.mean(), PATTERN_SMOOTHING_PX)
    core = slice(lags, a.size - lags)
    norm = np.linalg.norm(a[core]) * np.linalg.norm(b[core])
    if not norm > 0:
        return float("nan")
    # correlation of the reference's core with the map moved by each whole pixel ...
    scores = np.array([a[core] @ b[lags + k: b.size - lags + k] for k in range(-lags, lags + 1)]) / norm
    whole = int(np.argmax(scores[1:-1])) + 1 - lags
    # ... then by a fraction of one: the map's cubic spline read off between its pixels
    # (a parabola through three correlation scores is biased by a tenth of a pixel)
    from scipy.interpolate import CubicSpline
    from scipy.optimize import minimize_scalar

    spline = CubicSpline(np.arange(b.size), b)
    where = np.arange(a.size)[core]

    def anticorrelation(shift: float) -> float:
        return -float(a[core] @ spline(where + shift))

    found = minimize_scalar(anticorrelation, bounds=(whole - 1.0, whole + 1.0), method="bounded",
                            options={"xatol": 1e-3})
    return float(found.x)


def shift_message(name: str, system: str, shift_px: float) -> str | None:
    """One sentence for the user when ``shift_px`` is at least :data:`SHIFT_WARNING_PX`, else None."""
    if not np.isfinite(shift_px) or abs(shift_px) < SHIFT_WARNING_PX:
        return None
    side = "red" if shift_px > 0 else "blue"
    return (f"{name}: the {system} lines sit {abs(shift_px):.2f} px to the {side} of where the model saw them; "
            f"the {system} spectrometer drifted since training and its stored wavelength axis was not "
            "recalibrated. Every model transfers worse for it: calibrate the wavelength axis on the day "
            "(the transfer then resamples onto the model's axis; docs/transfer.md)")


class ShiftCheck:
    """The mean of a map's first ``max_spots`` baseline-corrected spectra, held against the
    model's training mean (``reference``): ``add`` chunks while ``wants_more``, then
    ``shift_px()``."""

    def __init__(self, reference: np.ndarray, max_spots: int = 4096):
        self.reference = np.asarray(reference, np.float64)
        self.max_spots = int(max_spots)
        self._sum = np.zeros_like(self.reference)
        self.n = 0

    @property
    def wants_more(self) -> bool:
        return self.n < self.max_spots

    def add(self, corrected: np.ndarray) -> None:
        take = np.asarray(corrected, np.float64)[: self.max_spots - self.n]
        self._sum += take.sum(axis=0)
        self.n += len(take)

    def shift_px(self) -> float:
        return apparent_shift_px(self.reference, self._sum / self.n) if self.n else float("nan")


def model_shift_check(model_info: dict | None, max_spots: int) -> ShiftCheck | None:
    """A :class:`ShiftCheck` against the model's training mean secondary spectrum
    (`twinplume.secondary_mean_spectrum` in the worker's control ``model`` reply,
    spec/stream-protocol.md), or None where the model has none (a warning where it is not
    ``n_secondary`` finite numbers)."""
    info = model_info or {}
    mean = info.get("secondary_mean_spectrum")
    if mean is None:
        return None
    pixels = info.get("n_secondary", len(info.get("secondary_wavelengths") or ()))
    try:
        reference = np.asarray(mean, np.float64)
        usable = reference.shape == (int(pixels),) and bool(np.isfinite(reference).all())
    except (TypeError, ValueError):
        usable = False
    if not usable:
        log.warning("the model's secondary_mean_spectrum is not %s finite numbers; no check of where the "
                    "secondary's lines sit", pixels)
        return None
    return ShiftCheck(reference, max_spots=max_spots)
