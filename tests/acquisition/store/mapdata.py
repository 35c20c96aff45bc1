"""Deterministic small paired maps for the store tests (also used by the writer subprocesses)."""

from __future__ import annotations

import numpy as np

from acquisition.store import MapLayout

N_PRIMARY, N_SECONDARY = 40, 24
WAVELENGTHS = {
    "primary": np.linspace(245.0, 407.0, N_PRIMARY),
    "secondary": np.linspace(260.0, 370.0, N_SECONDARY),
}


def layout(ny: int = 6, nx: int = 7, order: str = "snake") -> MapLayout:
    return MapLayout((ny, nx), (40.0, 40.0), order, (100.0, 200.0))


def spot_spectra(iy: int, ix: int) -> dict[str, np.ndarray]:
    """Spectra that encode where they belong: value = 1000*iy + ix + pixel / 1000 (+ 0.5 for secondary)."""
    return {
        "primary": (1000.0 * iy + ix + np.arange(N_PRIMARY) / 1000.0).astype(np.float32),
        "secondary": (1000.0 * iy + ix + 0.5 + np.arange(N_SECONDARY) / 1000.0).astype(np.float32),
    }


def shot_of(iy: int, ix: int, nx: int) -> int:
    return 10_000 + iy * nx + ix


def write_spot(writer, iy: int, ix: int) -> None:
    lay = writer.layout
    writer.write_spot(iy, ix, spot_spectra(iy, ix), shot_of(iy, ix, lay.nx), 1.7e9 + iy * lay.nx + ix,
                      (float(lay.x_um[ix]) + 0.25, float(lay.y_um[iy]) - 0.25))
