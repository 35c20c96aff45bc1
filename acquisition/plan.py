"""Scan plans: which spots to visit, in which order, and where the stage must go.

A plan is built from the spots still missing (in visiting order, as the store
reports them), so a fresh map and a resumed one are planned the same way.
Step mode visits spots one by one; fly mode groups them into row segments of
adjacent spots swept at constant speed, one laser shot per spot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from acquisition.config import AcquisitionSettings, BenchConfig, ConfigError, settings_rate
from acquisition.store.layout import MapLayout


# Stage speed between spots and rows (fly rows move at step x rate, or this if faster).
TRAVEL_SPEED_UM_S = 20_000.0
# Default fly run-up, as time at row speed: room for the trigger's latency before the first spot.
RUN_UP_TIME_S = 0.02


def run_up_um(settings: AcquisitionSettings, config: BenchConfig) -> float:
    """How far before the first and after the last spot of a fly row the stage runs (0 in step mode)."""
    if settings.mode != "fly":
        return 0.0
    if config.stage.run_up_um is not None:
        return config.stage.run_up_um
    dx = settings.step_um[0]
    speed = dx * settings_rate(settings, config)
    return max(2 * dx, speed * RUN_UP_TIME_S)


@dataclass(frozen=True)
class FlySegment:
    """Adjacent spots of one row swept in one direction, one shot per spot."""

    iy: int
    ix: np.ndarray              # int64 columns in the order the laser hits them
    direction: int              # +1 left to right, -1 right to left
    y_um: float
    x_first_um: float           # nominal x of the first and last spot
    x_last_um: float
    run_up_um: float            # stage starts this far before the first spot and stops as far after the last

    @property
    def n_spots(self) -> int:
        return len(self.ix)

    @property
    def x_start_um(self) -> float:
        return self.x_first_um - self.direction * self.run_up_um

    @property
    def x_stop_um(self) -> float:
        return self.x_last_um + self.direction * self.run_up_um


def fly_segments(missing: np.ndarray, layout: MapLayout, run_up_um: float) -> list[FlySegment]:
    """Split the missing spots (visiting order) into runs of adjacent spots in one row.

    The sweep direction of a row follows the map's order (snake rows alternate),
    so a resumed map sweeps each gap the way the original pass did.
    """
    missing = np.asarray(missing, dtype=np.int64).reshape(-1, 2)
    segments: list[FlySegment] = []
    if len(missing) == 0:
        return segments
    iy, ix = missing[:, 0], missing[:, 1]
    # A segment breaks where the row changes or the column does not move on by one in the sweep direction.
    direction = np.where((layout.order == "snake") & (iy % 2 == 1), -1, 1)
    breaks = np.flatnonzero((np.diff(iy) != 0) | (np.diff(ix) != direction[1:])) + 1
    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(missing)]):
        row = int(iy[start])
        cols = ix[start:stop].copy()
        segments.append(FlySegment(
            iy=row, ix=cols, direction=int(direction[start]), y_um=float(layout.y_um[row]),
            x_first_um=float(layout.x_um[cols[0]]), x_last_um=float(layout.x_um[cols[-1]]),
            run_up_um=run_up_um))
    return segments


def check_travel(layout: MapLayout, travel_um: tuple[tuple[float, float], tuple[float, float]],
                 run_up_um: float = 0.0) -> None:
    """Raise ConfigError if any spot, or a fly run-up beyond the first/last column, leaves the stage travel."""
    ny, nx = layout.shape
    xs, ys = layout.x_um, layout.y_um
    need = {"x": (float(xs.min()) - run_up_um, float(xs.max()) + run_up_um),
            "y": (float(ys.min()), float(ys.max()))}
    for (axis, (lo, hi)), (t_lo, t_hi) in zip(need.items(), travel_um):
        if lo < t_lo or hi > t_hi:
            extra = f" including {run_up_um:g} µm run-up each side" if axis == "x" and run_up_um else ""
            raise ConfigError(
                f"map larger than the stage travel: {axis} from {lo:g} to {hi:g} µm{extra} "
                f"is outside the stage's {axis} travel [{t_lo:g}, {t_hi:g}] µm "
                f"(shape {ny}x{nx}, step (x, y) ({layout.dx_um:g}, {layout.dy_um:g}) µm, "
                f"origin ({layout.origin_um[0]:g}, {layout.origin_um[1]:g}) µm)")
