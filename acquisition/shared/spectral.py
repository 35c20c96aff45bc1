"""Torch-free spectral helpers shared by every package: input checks, wavelength axes,
resampling and the paper's baseline correction (numpy and scipy only).

- ``check_spectra(X, n_pixels=None, name=...)`` -> 2-D float array; raises
  :class:`SpectraError` for a wrong shape, a wrong pixel count or NaN/inf.
- ``check_wavelength_axis(axis, name=...)``: a usable axis (1-D, finite, strictly
  increasing) or :class:`WavelengthMismatchError`.
- ``check_wavelengths(expected, actual, tol_nm=None, name=...)``; raises
  :class:`WavelengthMismatchError`.  ``resample(X, wl_from, wl_to)`` moves spectra
  onto another (slightly drifted) axis by linear interpolation.
- ``AxisResampler(wl_from, wl_to)``: spectra of a recalibrated spectrometer onto the axis a
  model was trained on, by cubic-spline interpolation (a sparse operator built once);
  ``recalibrated_axis(found, expected, ...)`` says whether an axis needs it, or can take it;
  ``recalibration_resampler`` gives the one an axis needs (or None); ``axis_offset_px`` how far.
- ``baseline_correct(X, min_window=100, smooth_window=50)`` and
  ``estimate_baseline(...)``: the paper's baseline correction, vectorised.
  ``gaussian_window`` and ``gaussian_kernel`` give its exact smoothing weights, from
  which the ONNX export (``transfer.onnx_graph``) rebuilds it.

The baseline (Képeš et al. 2018, as used by Vrábel et al. 2023), per spectrum x of n px:

1. ``m = (trailing_min + leading_min) / 2`` where ``trailing_min[i] = min x[i-w+1 .. i]``
   and ``leading_min[i] = min x[i .. i+w-1]`` with w = ``min_window``; windows are
   truncated at the ends (pandas ``rolling(w, min_periods=1).min()`` and the same on
   the reversed series).
2. ``b = (trailing_mean + leading_mean) / 2`` of ``m`` zero-padded at both ends, where
   the means are Gaussian-weighted over s = ``smooth_window`` px with sigma = s
   (pandas ``rolling(s, win_type="gaussian").mean(std=s)``; the weights are divided by
   their sum, padded zeros count as values).
3. corrected = x - b.

Step 2 is one symmetric correlation of ``m`` with ``gaussian_kernel(s)`` (length
2s-1, sums to 1) under zero padding of s-1 on each side.

Here it is computed in blocks of spectra: both sliding minima from one array of
window minima built by log2(w) elementwise-minimum passes, and the smoothing as an FFT
convolution; it equals the direct form to float rounding (tests compare with pandas).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

# scipy is imported where the baseline needs it, not here: the paired-map store imports this
# module for its axis checks, and scipy.signal alone takes seconds to import on a small PC.

#: The paper's baseline windows in pixels: (sliding-minimum window, Gaussian smoothing window).
DEFAULT_BASELINE_WINDOWS = (100, 50)


class SpectraError(ValueError):
    """Spectra that cannot be used: wrong shape, wrong pixel count, NaN or inf."""


class WavelengthMismatchError(ValueError):
    """Two wavelength axes that should be the same are not."""


# --------------------------------------------------------------------------- checks

def check_spectra(X, n_pixels: int | None = None, *, name: str = "spectra",
                  allow_1d: bool = False) -> np.ndarray:
    """Return ``X`` as a 2-D float array [n_spectra, n_pixels], or raise SpectraError.

    Integer input becomes float64; float32 stays float32 (no copy when already fine).
    ``allow_1d`` accepts one spectrum [n_pixels] and returns it as [1, n_pixels].
    """
    X = np.asarray(X)
    if X.ndim == 1 and allow_1d:
        X = X[None, :]
    if X.ndim != 2:
        raise SpectraError(f"{name}: expected a 2-D array [n_spectra, n_pixels], got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise SpectraError(f"{name}: expected numbers, got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32 if X.dtype == np.float16 else np.float64)
    if n_pixels is not None and X.shape[1] != n_pixels:
        raise SpectraError(f"{name}: expected {n_pixels} pixels per spectrum, got {X.shape[1]}")
    finite = np.isfinite(X)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        count = int((~finite.all(axis=1)).sum())
        raise SpectraError(f"{name}: {count} spectra contain NaN or inf "
                           f"(first at spectrum {row}, pixel {col}: {X[row, col]})")
    return X


def check_wavelength_axis(axis, *, name: str = "wavelengths") -> np.ndarray:
    """``axis`` as float64 [n_pixels] if it is a usable wavelength axis (1-D, at least 2 pixels,
    finite, strictly increasing), else WavelengthMismatchError naming the first fault."""
    axis = np.asarray(axis, dtype=np.float64)
    if axis.ndim != 1 or axis.size < 2:
        raise WavelengthMismatchError(f"{name}: must be 1-D with at least 2 pixels, got shape {axis.shape}")
    if not np.all(np.isfinite(axis)):
        raise WavelengthMismatchError(f"{name}: holds non-finite values")
    bad = np.flatnonzero(np.diff(axis) <= 0)
    if bad.size:
        i = int(bad[0])
        raise WavelengthMismatchError(f"{name}: not strictly increasing (index {i}: {axis[i]!r} then "
                                      f"{axis[i + 1]!r})")
    return axis


def check_wavelengths(expected, actual, *, tol_nm: float | None = None,
                      name: str = "wavelengths") -> None:
    """Raise WavelengthMismatchError unless the two axes have the same length and
    agree within ``tol_nm`` everywhere (default: a tenth of the smallest pixel
    spacing of ``expected``)."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.ndim != 1 or actual.ndim != 1:
        raise WavelengthMismatchError(f"{name}: wavelength axes must be 1-D, got shapes "
                                      f"{expected.shape} and {actual.shape}")
    if expected.shape != actual.shape:
        raise WavelengthMismatchError(f"{name}: expected {expected.size} pixels, got {actual.size} "
                                      f"({actual[0]:.3f}-{actual[-1]:.3f} nm vs "
                                      f"{expected[0]:.3f}-{expected[-1]:.3f} nm)")
    if tol_nm is None:
        tol_nm = 0.1 * float(np.min(np.diff(expected))) if expected.size > 1 else 1e-6
    diff = np.abs(expected - actual)
    worst = int(np.argmax(diff))
    if not diff[worst] < tol_nm:
        raise WavelengthMismatchError(
            f"{name}: axes differ by up to {diff[worst]:.4g} nm (pixel {worst}: "
            f"{expected[worst]:.4f} vs {actual[worst]:.4f} nm), tolerance {tol_nm:.4g} nm; "
            "resample the spectra onto the expected axis (resample()) for a drifted axis")


def resample(X, wl_from, wl_to, *, max_extrapolation_nm: float | None = None) -> np.ndarray:
    """Linearly interpolate spectra from axis ``wl_from`` onto ``wl_to``.

    Points of ``wl_to`` beyond the ends of ``wl_from`` take the edge value, but only up
    to ``max_extrapolation_nm`` (default: one pixel spacing at that end); further out is
    an error, since it would invent signal.
    """
    wl_from = check_wavelength_axis(wl_from, name="resample: source axis")
    wl_to = np.asarray(wl_to, dtype=np.float64)
    X = check_spectra(X, wl_from.size, name="spectra to resample", allow_1d=True)
    lo_gap, hi_gap = wl_from[0] - wl_to.min(), wl_to.max() - wl_from[-1]
    lo_lim = max_extrapolation_nm if max_extrapolation_nm is not None else wl_from[1] - wl_from[0]
    hi_lim = max_extrapolation_nm if max_extrapolation_nm is not None else wl_from[-1] - wl_from[-2]
    if lo_gap > lo_lim or hi_gap > hi_lim:
        raise WavelengthMismatchError(
            f"resample: target axis {wl_to.min():.3f}-{wl_to.max():.3f} nm reaches beyond the "
            f"source axis {wl_from[0]:.3f}-{wl_from[-1]:.3f} nm by more than the allowed "
            f"{lo_lim:.4g}/{hi_lim:.4g} nm")
    pos = np.clip(wl_to, wl_from[0], wl_from[-1])
    right = np.clip(np.searchsorted(wl_from, pos, side="right"), 1, wl_from.size - 1)
    t = ((pos - wl_from[right - 1]) / (wl_from[right] - wl_from[right - 1])).astype(X.dtype)
    return X[:, right - 1] * (1 - t) + X[:, right] * t


#: How far (pixels, anywhere on the detector) a day's recalibrated axis may lie from the axis a
#: model was trained on and still be resampled onto it: a few pixels of drift between days.
#: Further away is another spectrometer or another grating setting, which resampling cannot make
#: the model's.
MAX_RECALIBRATION_PX = 5.0
#: Spline weights below this are dropped from the operator (they decay ~3.7x a pixel).
_SPLINE_WEIGHT_FLOOR = 1e-6
#: pixels beyond which a cubic spline's weights lie below the floor (0.27 ** 20 ~ 4e-12)
_SPLINE_REACH_PX = 20


def axis_offset_px(found, expected) -> np.ndarray:
    """|pixels| between where each wavelength of ``found`` lies on ``expected`` and its own pixel."""
    expected = np.asarray(expected, np.float64)
    return np.abs(np.interp(np.asarray(found, np.float64), expected, np.arange(expected.size))
                  - np.arange(expected.size))


def recalibration_resampler(found, expected, *, name: str = "wavelengths") -> "AxisResampler | None":
    """The resampler from a recalibrated axis ``found`` onto ``expected``, None where it is the
    same axis; raises :class:`WavelengthMismatchError` as :func:`recalibrated_axis` does."""
    return AxisResampler(found, expected) if recalibrated_axis(found, expected, name=name) else None


def recalibrated_axis(found, expected, *, name: str = "wavelengths",
                      max_shift_px: float = MAX_RECALIBRATION_PX) -> bool:
    """False when ``found`` is ``expected`` (the rule of :func:`check_wavelengths`), True when
    it is the same detector recalibrated: same pixel count, within ``max_shift_px`` pixels of
    ``expected`` everywhere. Otherwise raises :class:`WavelengthMismatchError` naming how far."""
    expected = check_wavelength_axis(expected, name=name)
    found = np.asarray(found, dtype=np.float64)
    try:
        check_wavelengths(expected, found, name=name)
        return False
    except WavelengthMismatchError:
        if found.shape != expected.shape:
            raise
    found = check_wavelength_axis(found, name=name)
    shift_px = axis_offset_px(found, expected)
    worst = int(np.argmax(shift_px))
    if not shift_px[worst] <= max_shift_px:
        raise WavelengthMismatchError(
            f"{name}: axes differ by {shift_px[worst]:.1f} px (pixel {worst}: {expected[worst]:.4f} vs "
            f"{found[worst]:.4f} nm); a recalibrated axis is resampled up to {max_shift_px:g} px, further "
            "away is another spectrometer setting")
    return True


class AxisResampler:
    """Spectra on axis ``wl_from`` moved onto ``wl_to`` by cubic-spline interpolation.

    The spline through a spectrum is linear in its counts, so the whole interpolation is one
    sparse [n_to, n_from] operator, built once per pair of axes (its weights decay fast away
    from each target wavelength). A recalibrated spectrometer's lines land back on the pixels
    the model knows; cubic splines keep the line shapes that linear interpolation blurs (on
    the simulated bench, a severe day's 0.8 px drift: 0.11 of the spectrum's norm left with a
    spline, 0.17 with linear interpolation, 0.79 without resampling). Targets beyond the
    source axis take the spline's value at its end.
    """

    def __init__(self, wl_from, wl_to):
        from scipy import sparse
        from scipy.interpolate import CubicSpline

        self.wl_from = check_wavelength_axis(wl_from, name="resampler: source axis")
        self.wl_to = check_wavelength_axis(wl_to, name="resampler: target axis")
        target = np.clip(self.wl_to, self.wl_from[0], self.wl_from[-1])
        n_from, rows, cols, vals = self.wl_from.size, [], [], []
        # a cubic spline's weight on a pixel falls by 2 - sqrt(3) (~0.27) per pixel away from it,
        # below 1e-11 at 20 px: each block of source pixels is solved on a window of its
        # neighbours and read where its weights are not negligible, which keeps building the
        # operator linear in the pixel count (the live client builds one during a map)
        block, reach = 128, _SPLINE_REACH_PX
        for start in range(0, n_from, block):
            stop = min(n_from, start + block)
            lo, hi = max(0, start - 2 * reach), min(n_from, stop + 2 * reach)
            unit = np.zeros((hi - lo, stop - start))
            unit[np.arange(start - lo, stop - lo), np.arange(stop - start)] = 1.0
            near = np.flatnonzero((target >= self.wl_from[max(0, start - reach)])
                                  & (target <= self.wl_from[min(n_from - 1, stop - 1 + reach)]))
            weights = CubicSpline(self.wl_from[lo:hi], unit, axis=0)(target[near])     # [near, block]
            r, c = np.nonzero(np.abs(weights) > _SPLINE_WEIGHT_FLOOR)
            rows.append(near[r]), cols.append(c + start), vals.append(weights[r, c])
        self.operator = sparse.csr_matrix((np.concatenate(vals).astype(np.float32),
                                           (np.concatenate(rows), np.concatenate(cols))),
                                          shape=(self.wl_to.size, n_from))

    def __call__(self, X) -> np.ndarray:
        """float32 [k, n_to] from spectra [k, n_from] (one spectrum [n_from] gives [1, n_to])."""
        X = check_spectra(X, self.wl_from.size, name="spectra to resample", allow_1d=True)
        return np.asarray((self.operator @ np.asarray(X, np.float32).T).T, dtype=np.float32)


# ----------------------------------------------------------------- baseline correction

def gaussian_window(window: int, std: float | None = None) -> np.ndarray:
    """The weights pandas uses for ``rolling(window, win_type="gaussian").mean(std)``
    (symmetric, unnormalised); ``std`` defaults to ``window``."""
    from scipy.signal import windows

    return windows.gaussian(window, window if std is None else std, sym=True)


def gaussian_kernel(window: int) -> np.ndarray:
    """The smoothing kernel of the baseline: length 2*window-1, float64, sums to 1.

    The average of the trailing and the leading Gaussian-weighted means, written as
    one centred correlation kernel (tap ``j`` weights ``m[i + j - (window-1)]``).
    """
    g = gaussian_window(window)
    kernel = np.zeros(2 * window - 1)
    kernel[:window] += g          # trailing: m[i-window+1 .. i]
    kernel[window - 1:] += g      # leading: m[i .. i+window-1]
    return kernel / (2 * g.sum())


def check_baseline_windows(min_window, smooth_window) -> None:
    """Raise ValueError unless both baseline windows are positive integers."""
    for label, value in (("min_window", min_window), ("smooth_window", smooth_window)):
        if int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")


def _window_min_into(padded: np.ndarray, window: int, ping: np.ndarray, pong: np.ndarray,
                     out: np.ndarray) -> None:
    """``out[:, s] = padded[:, s:s+window].min(axis=1)`` by doubling: windows of 2, 4,
    8, ... px from elementwise minima of contiguous rows, and the window assembled from
    the powers of two in its binary expansion. ``ping``/``pong`` are scratch buffers as
    large as ``padded``; nothing is allocated (fresh large arrays cost page faults)."""
    n_out = out.shape[1]
    level, valid = padded, padded.shape[1]      # level[:, s] = min of `span` px from s
    span, offset, started = 1, 0, False
    scratch = (ping, pong)
    while True:
        if window & span:
            part = level[:, offset:offset + n_out]
            if started:
                np.minimum(out, part, out=out)
            else:
                np.copyto(out, part)
                started = True
            offset += span
        if 2 * span > window:
            return
        target = scratch[0] if level is not scratch[0] else scratch[1]
        np.minimum(level[:, :valid - span], level[:, span:valid], out=target[:, :valid - span])
        level, valid, span = target, valid - span, 2 * span


@lru_cache(maxsize=16)
def _kernel_spectrum(n: int, smooth_window: int, dtype: str) -> tuple[int, np.ndarray]:
    # Zero padding to n + s - 1 keeps the circular convolution equal to the linear one.
    # The 1/2 of the min average is folded into the kernel.
    from scipy import fft

    n_fft = fft.next_fast_len(n + smooth_window - 1, real=True)
    kernel = 0.5 * gaussian_kernel(smooth_window)
    taps = np.zeros(n_fft)
    taps[:smooth_window] = kernel[smooth_window - 1:]
    if smooth_window > 1:
        taps[-(smooth_window - 1):] = kernel[:smooth_window - 1]
    spectrum = fft.rfft(taps).astype(np.complex64 if dtype == "float32" else np.complex128)
    spectrum.setflags(write=False)
    return n_fft, spectrum


def _baseline_into(X: np.ndarray, out: np.ndarray, min_window: int, smooth_window: int, *,
                   subtract: bool, block_rows: int) -> None:
    """Write the baseline (or X minus it) of finite 2-D X into ``out``, block by block
    with reused buffers small enough to stay in cache."""
    from scipy import fft

    n_total, n = X.shape
    w = min_window
    rows = max(1, min(block_rows, n_total))
    padded = np.empty((rows, n + 2 * (w - 1)), X.dtype)
    padded[:, :w - 1] = np.inf                  # ignored by the minimum: truncated windows
    padded[:, w - 1 + n:] = np.inf
    ping, pong = np.empty_like(padded), np.empty_like(padded)
    starts = np.empty((rows, n + w - 1), X.dtype)  # starts[:, s] = min x[s-w+1 .. s]
    n_fft, kernel_spectrum = _kernel_spectrum(n, smooth_window, X.dtype.name)
    doubled_m = np.zeros((rows, n_fft), X.dtype)   # 2 m, zero-padded for the FFT
    for first in range(0, n_total, rows):
        k = min(rows, n_total - first)
        padded[:k, w - 1:w - 1 + n] = X[first:first + k]
        _window_min_into(padded[:k], w, ping[:k], pong[:k], starts[:k])
        np.add(starts[:k, :n], starts[:k, w - 1:w - 1 + n], out=doubled_m[:k, :n])
        spectrum = fft.rfft(doubled_m[:k], axis=1)
        spectrum *= kernel_spectrum
        baseline = fft.irfft(spectrum, n=n_fft, axis=1, overwrite_x=True)[:, :n]
        if subtract:
            np.subtract(X[first:first + k], baseline, out=out[first:first + k])
        else:
            out[first:first + k] = baseline


def estimate_baseline(X, min_window: int = 100, smooth_window: int = 50, *,
                      block_rows: int = 32) -> np.ndarray:
    """The baseline that :func:`baseline_correct` subtracts, same shape and dtype as X."""
    check_baseline_windows(min_window, smooth_window)
    X = check_spectra(X, name="spectra for baseline correction", allow_1d=True)
    out = np.empty_like(X)
    _baseline_into(X, out, int(min_window), int(smooth_window), subtract=False, block_rows=block_rows)
    return out


def baseline_correct(X, min_window: int = 100, smooth_window: int = 50, *,
                     block_rows: int = 32) -> np.ndarray:
    """Subtract the paper's baseline (module docstring) from every spectrum of X
    [n_spectra, n_pixels] (or one spectrum [n_pixels]); returns a new float array of
    X's float dtype (float32 stays float32)."""
    check_baseline_windows(min_window, smooth_window)
    X = check_spectra(X, name="spectra for baseline correction", allow_1d=True)
    out = np.empty_like(X)
    _baseline_into(X, out, int(min_window), int(smooth_window), subtract=True, block_rows=block_rows)
    return out
