"""Simulated benches for the acquisition tests, and checks of a map against the bench's ground truth."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import h5py
import numpy as np

from acquisition.config import AcquisitionSettings
from acquisition.shared.systems import SYSTEM_NAMES
from sim.bench import SimulatedBench
from tests.fixtures.emulated import make_bench  # noqa: F401 (fixture)

ORIGIN_UM = (2000.0, 2000.0)


def small_map(**changes) -> AcquisitionSettings:
    base = AcquisitionSettings(shape=(6, 5), step_um=(40.0, 40.0), origin_um=ORIGIN_UM, retries=4)
    return replace(base, **changes)


@contextmanager
def open_map(path):
    """A plain h5py look at a map, whether or not its writer finished (SWMR read)."""
    with h5py.File(path, "r", swmr=True) as f:
        yield f


def scan(path) -> dict[str, np.ndarray]:
    with open_map(path) as f:
        return {name: f["entry/scan"][name][()] for name in ("acquired", "shot_id", "timestamp", "position")}


def assert_matches_fired(path, fired, settings: AcquisitionSettings, spots=None, id_offset: int = 0,
                         tolerance_um: float = 1.0) -> int:
    """Every acquired spot (or those in the boolean mask `spots`) is a shot the bench fired at that spot.

    Its timestamp is the shot's trigger time, its shot id the delay generator's cycle count
    (plus `id_offset` for a resumed run), and the stage position recorded, the position the
    plasma was made at, and the spot's nominal grid position all agree.
    """
    values = scan(path)
    mask = values["acquired"] == 1 if spots is None else spots
    times = np.array([f.t for f in fired])
    assert len(times), "the bench fired nothing"
    (dx, dy), (x0, y0) = settings.step_um, settings.origin_um
    for iy, ix in zip(*np.nonzero(mask)):
        j = int(np.argmin(np.abs(times - values["timestamp"][iy, ix])))
        shot = fired[j]
        where = f"spot ({iy}, {ix})"
        assert abs(shot.t - values["timestamp"][iy, ix]) < 1e-6, f"{where}: no fired shot at its timestamp"
        assert values["shot_id"][iy, ix] == shot.shot_id + id_offset, f"{where}: shot id {values['shot_id'][iy, ix]} " \
            f"but the bench fired shot {shot.shot_id} (+{id_offset}) then"
        x, y = values["position"][iy, ix]
        assert abs(x - shot.x_um) < tolerance_um and abs(y - shot.y_um) < tolerance_um, \
            f"{where}: recorded at ({x:.2f}, {y:.2f}) µm, the plasma was at ({shot.x_um:.2f}, {shot.y_um:.2f})"
        assert abs(shot.x_um - (x0 + ix * dx)) < tolerance_um and abs(shot.y_um - (y0 + iy * dy)) < tolerance_um, \
            f"{where}: the shot recorded there hit ({shot.x_um:.2f}, {shot.y_um:.2f}) µm"
    return int(mask.sum())


class FrameTap:
    """Keeps every frame the bench's spectrometers hand out (the real read_batch, observed)."""

    def __init__(self, bench: SimulatedBench, systems=SYSTEM_NAMES) -> None:
        self.frames: dict[str, dict[float, np.ndarray]] = {s: {} for s in systems}
        for system in systems:
            spectrometer = bench.spectrometer(system)
            spectrometer.read_batch = self._tap(system, spectrometer.read_batch)

    def _tap(self, system, read_batch):
        def observed(max_frames, timeout_s):
            frames = read_batch(max_frames, timeout_s)
            for frame in frames:
                self.frames[system][frame.timestamp] = frame.counts
            return frames
        return observed

    def counts(self, system: str, timestamp: float) -> np.ndarray:
        stamps = np.array(list(self.frames[system]))
        nearest = stamps[np.argmin(np.abs(stamps - timestamp))]
        assert abs(nearest - timestamp) < 1e-6, f"{system} delivered no frame at {timestamp}"
        return self.frames[system][nearest]


def assert_spectra_are_the_shots(path, tap: FrameTap, spots=None) -> None:
    """Each system's spectrum of each acquired spot (or of those in the mask `spots`) is exactly
    the frame that system delivered for the spot's shot (same trigger timestamp)."""
    with open_map(path) as f:
        acquired = f["entry/scan/acquired"][()] == 1 if spots is None else spots
        stamps = f["entry/scan/timestamp"][()]
        for system in tap.frames:
            spectra = f[f"entry/{system}/spectra"]
            for iy, ix in zip(*np.nonzero(acquired)):
                np.testing.assert_array_equal(spectra[iy, ix], tap.counts(system, stamps[iy, ix]),
                                              err_msg=f"{system} spectrum of spot ({iy}, {ix})")
