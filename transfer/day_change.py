"""Another day's secondary spectrometer, simulated: smooth gain curves on its counts.

A spectrometer's response changes from day to day smoothly across its range (fibre
coupling, alignment, focus) while the plasma it sees stays the plasma. One such
change is a gain curve over the pixel axis,

    gain(t) = 1 + a0 + a1 P1(t) + a2 P2(t)      (Legendre polynomials, t in [-1, 1])

multiplying the baseline-corrected counts. In scaled units (the model's inputs) a
count of zero is ``zero`` = -mean / scale per pixel, so the changed spectrum is
``zero + gain * (x - zero)``.

Both model families are made robust to this one change (docs/transfer.md,
"Day-change augmentation" and "Ridge strength chosen for another day"): the
networks train on random curves (`transfer.estimators.with_gain_augmentation`),
and the linear baselines' ridge strength and PLS components are chosen on the
validation map seen through fixed random curves (`day_changed`). Numpy only.
"""
from __future__ import annotations

import numpy as np

#: the seed of the fixed curves the validation map is seen through
DAY_CHANGE_SEED = 12345


def legendre_basis(n_pixels: int) -> np.ndarray:
    """[3, n_pixels] float32: P0, P1, P2 over the pixel axis."""
    t = np.linspace(-1.0, 1.0, int(n_pixels), dtype=np.float32)
    return np.stack([np.ones_like(t), t, 1.5 * t ** 2 - 0.5])


def day_changed(scaled_secondary: np.ndarray, zero: np.ndarray, amplitude: float,
                seed: int = DAY_CHANGE_SEED) -> np.ndarray:
    """The scaled secondary spectra [n, pixels], each under its own gain curve with coefficients
    ~ N(0, amplitude^2), drawn from `seed` (the same spectra and seed give the same curves)."""
    x = np.asarray(scaled_secondary, np.float32)
    zero = np.asarray(zero, np.float32).reshape(-1)
    coefficients = amplitude * np.random.default_rng(seed).standard_normal((x.shape[0], 3)).astype(np.float32)
    gain = 1.0 + coefficients @ legendre_basis(x.shape[1])
    return zero + gain * (x - zero)
