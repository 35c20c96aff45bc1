"""The paper's baseline correction written plainly with pandas rolling windows, one spectrum
at a time: the reference that `bench/preprocess.py` times and that
tests/transfer/test_preprocess.py checks `acquisition.shared.spectral.baseline_correct`
against (needs pandas, which only the `test` extra installs)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pandas_baseline_correct(spectrum: np.ndarray, min_window: int, smooth_window: int) -> np.ndarray:
    """One spectrum minus its baseline: the mean of the trailing and leading sliding minima over
    `min_window` px, smoothed by the mean of the trailing and leading Gaussian-weighted means over
    `smooth_window` px (sigma = `smooth_window`) of the zero-padded minima."""
    s = pd.Series(spectrum, dtype=float)
    trailing_min = s.rolling(min_window, min_periods=1).min()
    leading_min = s[::-1].rolling(min_window, min_periods=1).min()[::-1]
    m = (trailing_min.to_numpy() + leading_min.to_numpy()) / 2
    pad = np.zeros(smooth_window)
    padded = pd.Series(np.concatenate([pad, m, pad]))
    trailing_mean = padded.rolling(smooth_window, win_type="gaussian").mean(std=smooth_window)
    leading_mean = padded[::-1].rolling(smooth_window, win_type="gaussian").mean(std=smooth_window)[::-1]
    smooth = ((trailing_mean.to_numpy() + leading_mean.to_numpy()) / 2)[smooth_window:-smooth_window]
    return spectrum - smooth
