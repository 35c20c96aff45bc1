"""Small synthetic paired spectra for the transfer-evaluation tests.

A few mineral-like endmembers, each a set of Gaussian emission lines, are mixed with
random abundances and seen through two spectrometers with different ranges, pixel
grids and resolutions — a linear-mixing stand-in for the paired LIBS maps.
"""
from __future__ import annotations

import numpy as np

WL_PRIMARY = np.linspace(245.0, 407.0, 360)
WL_SECONDARY = np.linspace(260.0, 370.0, 330)


def _lines(wavelengths, centers, amplitudes, fwhm):
    sigma = fwhm / 2.3548
    return (amplitudes[:, None, :] *
            np.exp(-0.5 * ((wavelengths[None, :, None] - centers[:, None, :]) / sigma) ** 2)).sum(axis=2)


def endmembers(n_phases=3, n_lines=10, seed=0):
    rng = np.random.default_rng(seed)
    # Most lines inside the shared range, a few beyond the secondary's ends.
    centers = np.concatenate([rng.uniform(262, 368, (n_phases, n_lines - 2)),
                              rng.uniform(247, 405, (n_phases, 2))], axis=1)
    amplitudes = rng.uniform(200, 2000, (n_phases, n_lines))
    primary = _lines(WL_PRIMARY, centers, amplitudes, fwhm=1.2)
    secondary = 0.6 * _lines(WL_SECONDARY, centers, amplitudes, fwhm=0.8)
    return primary, secondary


def paired_spectra(n, *, seed=0, noise=5.0, n_phases=3):
    """(X_secondary [n, 330], X_primary [n, 360], abundances [n, n_phases])."""
    primary_em, secondary_em = endmembers(n_phases)
    rng = np.random.default_rng(1000 + seed)
    abundances = rng.dirichlet(np.full(n_phases, 0.4), n) * rng.lognormal(0, 0.2, (n, 1))
    X_primary = abundances @ primary_em + rng.normal(0, noise, (n, WL_PRIMARY.size))
    X_secondary = abundances @ secondary_em + rng.normal(0, noise, (n, WL_SECONDARY.size))
    return X_secondary, X_primary, abundances


def raw_spectra(n, n_pixels, seed=0):
    """Spectra with lines on a sloped, curved continuum and noise (for the baseline)."""
    rng = np.random.default_rng(seed)
    px = np.arange(n_pixels)
    continuum = (rng.uniform(50, 400, (n, 1)) + rng.uniform(0, 0.2, (n, 1)) * px
                 + rng.uniform(0, 200, (n, 1)) * np.sin(px / n_pixels * np.pi))
    centers = rng.uniform(0, n_pixels, (n, 30))
    amps = rng.uniform(100, 3000, (n, 30))
    lines = (amps[:, None, :] * np.exp(-0.5 * ((px[None, :, None] - centers[:, None, :]) / 2.0) ** 2)).sum(axis=2)
    return continuum + lines + rng.normal(0, 10, (n, n_pixels))
