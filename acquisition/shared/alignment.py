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

A map that was not recalibrated can be aligned from its own lines: :func:`line_offset` measures
the offset in eight stretches of the detector and fits a shift and a stretch (how a grating's
drift moves lines: the same everywhere plus a little more at one end), and
:meth:`LineOffset.seen_axis` gives the wavelengths the detector's pixels actually saw that day;
resampled from that axis onto the model's (``spectral.AxisResampler``), the lines land back on
the model's pixels, much as a lamp calibration on the day would put them (docs/transfer.md,
"Lines aligned from the map itself").
Numpy and scipy only: the live path imports it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


#: Offsets below this (pixels, anywhere on the detector) are left alone: other maps of the
#: training day read below 0.01 px against its mean on the simulated bench, and a map read as
#: stored is exactly the data. Its mild days drift by a tenth of a pixel or two, and
#: aligning them pays (docs/transfer.md, "Lines aligned from the map itself").
ALIGN_MIN_PX = 0.05
#: Stretches of the detector measured apart to see a stretch as well as a shift.
ALIGN_SEGMENTS = 8
#: A stretch whose offset lies further than this from the line most stretches agree on is left
#: out as a failed measurement (a stretch with no lines in it, or a blend whose ratio changed).
ALIGN_OUTLIER_PX = 0.15


@dataclass(frozen=True)
class LineOffset:
    """How far a map's lines sit from the model's, as a shift and a stretch in pixels.

    ``at(pixel)`` = ``shift_px + stretch_px * u``, where ``u`` runs from -1 at the first pixel
    to +1 at the last (the grating's drift: positive towards the red). ``whole_px`` is the
    offset of the whole spectrum measured at once (:func:`apparent_shift_px`), the figure
    reports print; ``segments`` says how many of the detector's stretches agreed on the line.
    """

    n_pixels: int
    shift_px: float
    stretch_px: float
    whole_px: float
    segments: int

    def at(self, pixel) -> np.ndarray:
        pixel = np.asarray(pixel, np.float64)
        return self.shift_px + self.stretch_px * (pixel - 0.5 * (self.n_pixels - 1)) / (0.5 * self.n_pixels)

    @property
    def max_px(self) -> float:
        """The largest |offset| over the detector."""
        return float(np.abs(self.at([0, self.n_pixels - 1])).max())

    @property
    def worth_aligning(self) -> bool:
        """Lines :data:`ALIGN_MIN_PX` or more away somewhere on the detector; closer, a map is
        read as stored, exactly the data."""
        return bool(np.isfinite(self.whole_px) and self.max_px >= ALIGN_MIN_PX)

    def seen_axis(self, wavelengths) -> np.ndarray:
        """The wavelengths the pixels of a detector calibrated as ``wavelengths`` saw: a line the
        model knows at pixel q sits at q + offset, so pixel p saw what the axis puts at p - offset."""
        wavelengths = np.asarray(wavelengths, np.float64)
        if wavelengths.shape != (self.n_pixels,):
            raise ValueError(f"an axis of {self.n_pixels} pixels is needed, got {wavelengths.shape}")
        pixel = np.arange(self.n_pixels)
        where = pixel - self.at(pixel)
        seen = np.interp(where, pixel, wavelengths)
        # beyond the detector's ends the axis goes on at its end dispersion
        blue, red = where < 0, where > self.n_pixels - 1
        seen[blue] = wavelengths[0] + where[blue] * (wavelengths[1] - wavelengths[0])
        seen[red] = wavelengths[-1] + (where[red] - self.n_pixels + 1) * (wavelengths[-1] - wavelengths[-2])
        return seen

    def describe(self) -> str:
        return f"{self.shift_px:+.2f} px at the centre, {self.stretch_px:+.2f} px more at the red end"


def line_offset(reference: np.ndarray, mean: np.ndarray, *, segments: int = ALIGN_SEGMENTS) -> LineOffset | None:
    """The shift and stretch that carry ``reference``'s lines onto ``mean``'s (two mean
    baseline-corrected spectra on one pixel grid), or None where the spectra have too little
    structure to say. Each of ``segments`` stretches of the detector is measured with
    :func:`apparent_shift_px`; the stretches that agree (within :data:`ALIGN_OUTLIER_PX`) with
    the line most of them lie on are fitted, each weighted by the square root of its line
    amplitude; a stretch within twice its standard error is taken as none. With fewer than
    three agreeing stretches the whole spectrum's shift is taken, without a stretch."""
    reference = np.asarray(reference, np.float64)
    mean = np.asarray(mean, np.float64)
    whole = apparent_shift_px(reference, mean)
    if not np.isfinite(whole):
        return None
    whole_only = LineOffset(reference.size, float(whole), 0.0, float(whole), 0)
    n = reference.size
    edges = np.linspace(0, n, segments + 1).astype(int)
    centre = 0.5 * (edges[:-1] + edges[1:] - 1)
    u = (centre - 0.5 * (n - 1)) / (0.5 * n)
    offset = np.full(segments, np.nan)
    weight = np.zeros(segments)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        if b - a > 4 * (int(np.ceil(MAX_RECALIBRATION_PX)) + 1):
            offset[k] = apparent_shift_px(reference[a:b], mean[a:b])
            weight[k] = np.sum((reference[a:b] - reference[a:b].mean()) ** 2)
    # a stretch whose correlation peaked at the edge of the search found no line, only a slope
    usable = np.flatnonzero(np.isfinite(offset) & (np.abs(offset) < MAX_RECALIBRATION_PX - 0.5) & (weight > 0))
    if usable.size < 3:
        return whole_only
    # the line most stretches agree with (a consensus of pairs: one strong blend whose ratio
    # changed must not drag the rest), then fitted through those, weighted by their lines
    best, best_miss = np.zeros(0, int), np.inf
    for i in usable:
        for j in usable[usable > i]:
            slope = (offset[j] - offset[i]) / (u[j] - u[i])
            miss = np.abs(offset[usable] - offset[i] - slope * (u[usable] - u[i]))
            agree = usable[miss <= ALIGN_OUTLIER_PX]
            # the most stretches, and among as many the closest line: a loose line through an
            # outlier can gather as many as the true one
            total = float(miss[miss <= ALIGN_OUTLIER_PX].sum())
            if agree.size > best.size or (agree.size == best.size and total < best_miss):
                best, best_miss = agree, total
    if best.size < 3:
        return whole_only
    root_weight = weight[best] ** 0.25          # square root of each stretch's line amplitude
    design = np.c_[np.ones(best.size), u[best]] * root_weight[:, None]
    (shift, stretch), *_ = np.linalg.lstsq(design, offset[best] * root_weight, rcond=None)
    # a stretch no larger than twice its standard error is noise: extrapolated to the detector's
    # ends it would move lines that did not move
    residual = (offset[best] - shift - stretch * u[best]) * root_weight
    variance = residual @ residual / (best.size - 2)
    stretch_se = np.sqrt(variance * np.linalg.inv(design.T @ design)[1, 1])
    if abs(stretch) <= 2 * stretch_se:
        shift, stretch = float(np.average(offset[best], weights=root_weight ** 2)), 0.0
    return LineOffset(n, float(shift), float(stretch), float(whole), int(best.size))


def shift_message(name: str, system: str, shift_px: float, *, aligned: bool = False) -> str | None:
    """One sentence for the user when ``shift_px`` is at least :data:`SHIFT_WARNING_PX`, else None;
    ``aligned``: the spectra were aligned from the map's own lines (:func:`line_offset`)."""
    if not np.isfinite(shift_px) or abs(shift_px) < SHIFT_WARNING_PX:
        return None
    side = "red" if shift_px > 0 else "blue"
    where = (f"{name}: the {system} lines sit {abs(shift_px):.2f} px to the {side} of where the model saw them; "
             f"the {system} spectrometer drifted since training and its stored wavelength axis was not "
             "recalibrated. ")
    if aligned:
        return where + ("Its spectra were aligned from the map's own lines; a calibration of the wavelength "
                        "axis on the day is still the surer way (docs/transfer.md)")
    return where + ("Every model transfers worse for it: calibrate the wavelength axis on the day "
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

    def offset(self) -> LineOffset | None:
        """The shift and stretch of :func:`line_offset`; None before any spectrum or without lines."""
        return line_offset(self.reference, self._sum / self.n) if self.n else None


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
