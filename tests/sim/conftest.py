"""Shared helpers for the simulator tests: pure-phase spots and line measurements."""

from __future__ import annotations

import numpy as np
import pytest

from sim.sample import PHASE_NAMES
from sim.scene import PairedScene


@pytest.fixture(scope="session")
def scene() -> PairedScene:
    return PairedScene(seed=3, day=0)


@pytest.fixture(scope="session")
def pure_spots(scene):
    """phase name -> (x, y) of spots whose whole crater lies in that phase."""
    y, x = np.mgrid[0:400, 0:400] * 15.0
    x, y = x.ravel(), y.ravel()
    phase = scene.sample.phase_at(x, y)
    found = {}
    for p, name in enumerate(PHASE_NAMES):
        idx = np.flatnonzero(phase == p)[::3][:3000]
        weights = scene.sample.spot_composition(x[idx], y[idx]).phase_weights[:, p]
        idx = idx[weights > 0.999][:150]
        found[name] = (x[idx], y[idx])
    return found


@pytest.fixture(scope="session")
def phase_shots(scene, pure_spots):
    """phase name -> system -> counts [k, n] of pure spots of that phase."""
    rng = np.random.default_rng(11)
    return {name: scene.shots(x, y, rng=rng) for name, (x, y) in pure_spots.items()}


def line_significance(wavelengths: np.ndarray, shots: np.ndarray, line_nm: float) -> float:
    """Mean net line area (3 pixels) over shots divided by its standard error.

    Each shot's height is taken above its own local baseline, so spot-to-spot
    changes of the continuum (common to all pixels) do not count as noise.
    """
    pixel = int(round(np.interp(line_nm, wavelengths, np.arange(wavelengths.size))))
    core = shots[:, max(pixel - 1, 0):pixel + 2]
    side = np.concatenate([shots[:, max(pixel - 40, 0):max(pixel - 4, 0)], shots[:, pixel + 5:pixel + 41]], axis=1)
    net = core.sum(axis=1) - core.shape[1] * np.median(side, axis=1)
    return float(net.mean() / (net.std() / np.sqrt(len(net))))


def measure_line(wavelengths: np.ndarray, spectrum: np.ndarray, line_nm: float, search_px: int = 1):
    """(position error in pixels, net peak height) of the local maximum nearest a line.

    The centre is the vertex of a parabola through the peak pixel and its neighbours.
    """
    pixel = float(np.interp(line_nm, wavelengths, np.arange(wavelengths.size)))
    centre = int(round(pixel))
    lo, hi = max(centre - search_px, 1), min(centre + search_px, wavelengths.size - 2)
    j = lo + int(np.argmax(spectrum[lo:hi + 1]))
    a, b, c = spectrum[j - 1], spectrum[j], spectrum[j + 1]
    curvature = a - 2 * b + c
    vertex = j + (0.5 * (a - c) / curvature if curvature < 0 else 0.0)
    window = spectrum[max(centre - 60, 0):centre + 60]
    baseline = np.percentile(window, 30)
    return vertex - pixel, b - baseline


def covers(wavelengths: np.ndarray, line_nm: float) -> bool:
    return wavelengths[0] < line_nm < wavelengths[-1]
