"""Constants, errors and the nominal grid of a paired map (no HDF5 here)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import numpy as np

FORMAT = "twinplume.paired-map"
FORMAT_VERSION = 1
ORDERS = ("snake", "raster")


class PairedMapError(Exception):
    """Base of the paired-map store's errors."""


class PairedMapFormatError(PairedMapError):
    """A file violates the paired-map contract; the message names the first violation."""


class MapWriteError(PairedMapError):
    """Writing a map failed (disk full, I/O error). Every spot whose write had returned before is
    safe, in the file or in its journal; the writer touches the file no more."""

    def __init__(self, message: str, *, in_file: int, in_journal: int):
        super().__init__(message)
        self.in_file, self.in_journal = in_file, in_journal


class PairedMapMismatchError(PairedMapError):
    """A map being resumed differs from what the caller expects (shape, systems, wavelengths)."""


def default_creator() -> str:
    try:
        version = metadata.version("twinplume")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"twinplume {version}"


@dataclass(frozen=True)
class MapLayout:
    """The nominal grid of a map and the order in which the laser visits it.

    `shape` is (rows, columns) = (ny, nx), like every array of a map;
    `step_um` (dx, dy) and `origin_um` (x0, the stage position of spot
    (0, 0)) are positions and go (x, y), like every position. (The file keeps
    its attribute /entry/scan@step_um as [dy, dx], format version 1; only the
    store's skeleton and contract touch it.)
    """

    shape: tuple[int, int]
    step_um: tuple[float, float]
    order: str = "snake"
    origin_um: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"map shape must be two positive integers (ny, nx), got {self.shape!r}")
        step = tuple(float(v) for v in self.step_um)
        if len(step) != 2 or not all(np.isfinite(step)) or min(step) <= 0:
            raise ValueError(f"step_um must be two positive finite numbers (dx, dy), got {self.step_um!r}")
        origin = tuple(float(v) for v in self.origin_um)
        if len(origin) != 2 or not all(np.isfinite(origin)):
            raise ValueError(f"origin_um must be two finite numbers (x0, y0), got {self.origin_um!r}")
        if self.order not in ORDERS:
            raise ValueError(f"scan order must be one of {ORDERS}, got {self.order!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "step_um", step)
        object.__setattr__(self, "origin_um", origin)

    @property
    def ny(self) -> int:
        return self.shape[0]

    @property
    def nx(self) -> int:
        return self.shape[1]

    @property
    def dx_um(self) -> float:
        return self.step_um[0]

    @property
    def dy_um(self) -> float:
        return self.step_um[1]

    @property
    def x_um(self) -> np.ndarray:
        return self.origin_um[0] + self.dx_um * np.arange(self.nx, dtype=np.float64)

    @property
    def y_um(self) -> np.ndarray:
        return self.origin_um[1] + self.dy_um * np.arange(self.ny, dtype=np.float64)

    def visit_order(self) -> np.ndarray:
        """int64 [ny*nx, 2] of (iy, ix): rows top to bottom, fast axis x, row 0 left to right."""
        iy, ix = np.divmod(np.arange(self.ny * self.nx, dtype=np.int64), self.nx)
        if self.order == "snake":
            odd = (iy % 2) == 1
            ix[odd] = self.nx - 1 - ix[odd]
        return np.stack([iy, ix], axis=1)

    def same_grid(self, other: "MapLayout") -> bool:
        return (self.shape == other.shape and self.order == other.order
                and np.allclose(self.step_um, other.step_um, rtol=1e-9, atol=0)
                and np.allclose(self.origin_um, other.origin_um, rtol=1e-9, atol=1e-9))
