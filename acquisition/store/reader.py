"""PairedMapReader: validated, bounded-memory reading of a paired map, finished or live."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from .contract import check_contract
from .h5files import attr_text, open_for_reading, read_attrs
from .journal import journal_path
from .layout import MapLayout, PairedMapError, PairedMapFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Acquired spots: positions iy, ix (int64 [k]) and spectra per system (float32 [k, n])."""

    iy: np.ndarray
    ix: np.ndarray
    spectra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.iy.size)


class PairedMapReader:
    """Opens and validates a paired map; `live=True` follows a map being written (SWMR + refresh())."""

    def __init__(self, path, *, live: bool = False):
        self.path = Path(path)
        self._h5, self.live = open_for_reading(self.path, live=live)
        try:
            info = check_contract(self._h5)
        except PairedMapFormatError as exc:
            self._h5.close()
            raise PairedMapFormatError(f"{self.path}: {exc}") from None
        except BaseException:
            self._h5.close()
            raise
        entry = self._h5["entry"]
        self.systems: tuple[str, ...] = info.systems
        self.shape: tuple[int, int] = info.shape
        first = entry[self.systems[0]]
        x, y = first["x"][()], first["y"][()]
        self.layout = MapLayout(info.shape, info.step_um, info.order, (float(x[0]), float(y[0])))
        self.title = attr_text(entry["title"][()])
        self.start_time = attr_text(entry["start_time"][()])
        self.attrs = read_attrs(self._h5)
        self.instrument = {name: read_attrs(group) for name, group in entry["instrument"].items()
                           if isinstance(group, h5py.Group)}
        self._wavelengths = {s: entry[s]["wavelength"][()] for s in self.systems}
        self._spectra = {s: entry[s]["spectra"] for s in self.systems}
        self._acquired_ds = entry["scan/acquired"]
        self._read_acquired()
        if journal_path(self.path).exists() and not self.live:
            log.warning("%s: has a journal of unfinished writing beside it; the spots still in it appear "
                        "once the map is recovered (libs-acquire recover %s) or resumed", self.path, self.path)

    # -- what the map is -------------------------------------------------------

    @property
    def end_time(self) -> str | None:
        ds = self._h5["entry"].get("end_time")
        return None if ds is None else attr_text(ds[()])

    @property
    def n_acquired(self) -> int:
        return int(self._n_acquired)

    def wavelengths(self, system: str) -> np.ndarray:
        self._check_system(system)
        return self._wavelengths[system].copy()

    @property
    def sample_truth(self) -> dict | None:
        sample = self._h5["entry/sample"]
        if "phase_map" not in sample:
            return None
        names = sample["phase_names"][()] if "phase_names" in sample else np.array([])
        return {"phase_map": sample["phase_map"][()],
                "phase_names": [attr_text(n) for n in names],
                "attrs": read_attrs(sample)}

    def true_positions(self) -> np.ndarray | None:
        """Simulated maps: (x, y) µm where each spot's shot really hit, float64 [ny, nx, 2] (NaN
        where none did); None for a map without that ground truth (every real map)."""
        dataset = self._h5["entry/sample"].get("true_position")
        return None if dataset is None else dataset[()]

    def scan_values(self, name: str) -> np.ndarray:
        """A whole /entry/scan dataset: 'shot_id', 'timestamp', 'position' or 'acquired'."""
        if name not in ("shot_id", "timestamp", "position", "acquired"):
            raise KeyError(f"no scan dataset {name!r}")
        return self._h5["entry/scan"][name][()]

    # -- reading ---------------------------------------------------------------

    def spot(self, iy: int, ix: int) -> dict[str, np.ndarray]:
        iy, ix = int(iy), int(ix)
        ny, nx = self.shape
        if not (0 <= iy < ny and 0 <= ix < nx):
            raise IndexError(f"spot ({iy}, {ix}) is outside the {ny}x{nx} map")
        if not self.acquired[iy, ix]:
            raise PairedMapError(f"{self.path}: spot ({iy}, {ix}) is not acquired")
        return {s: self._spectra[s][iy, ix] for s in self.systems}

    def iter_chunks(self, systems: Sequence[str] | None = None, chunk_spots: int = 4096) -> Iterator[Chunk]:
        """Acquired spots in row-major order, at most about `chunk_spots` map spots read at a time."""
        systems = self._systems(systems)
        if chunk_spots < 1:
            raise ValueError(f"chunk_spots must be >= 1, got {chunk_spots}")
        acquired = self.acquired
        for y0, y1, x0, x1 in self._blocks(chunk_spots):
            mask = acquired[y0:y1, x0:x1]
            if not mask.any():
                continue
            rows = np.flatnonzero(mask.any(axis=1))
            y0, y1 = y0 + int(rows[0]), y0 + int(rows[-1]) + 1
            mask = acquired[y0:y1, x0:x1]
            iy, ix = np.nonzero(mask)
            full = bool(mask.all())
            spectra = {}
            for system in systems:
                block = self._spectra[system][y0:y1, x0:x1]
                spectra[system] = block.reshape(-1, block.shape[-1]) if full else block[mask]
            yield Chunk(iy + y0, ix + x0, spectra)

    def read_all(self, systems: Sequence[str] | None = None, max_spots: int | None = None) -> Chunk:
        """All acquired spots (or the first `max_spots` in row-major order) in one Chunk."""
        systems = self._systems(systems)
        k = self.n_acquired if max_spots is None else min(int(max_spots), self.n_acquired)
        out = {s: np.empty((k, self._wavelengths[s].size), np.float32) for s in systems}
        iy = np.empty(k, np.int64)
        ix = np.empty(k, np.int64)
        i = 0
        for chunk in self.iter_chunks(systems):
            if i >= k:
                break
            take = min(len(chunk), k - i)
            iy[i:i + take], ix[i:i + take] = chunk.iy[:take], chunk.ix[:take]
            for s in systems:
                out[s][i:i + take] = chunk.spectra[s][:take]
            i += take
        return Chunk(iy[:i], ix[:i], {s: a[:i] for s, a in out.items()})

    def refresh(self) -> None:
        """Live mode: pick up what the writer has committed since the last look."""
        if self.live:
            # `acquired` first: a spot marked there has its spectra on disk already,
            # so refreshing the spectra afterwards can only show more, never less.
            self._acquired_ds.refresh()
        self._read_acquired()
        if self.live:
            for ds in self._spectra.values():
                ds.refresh()

    def close(self) -> None:
        if self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> "PairedMapReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _read_acquired(self) -> None:
        self.acquired = self._acquired_ds[()] == 1
        self._n_acquired = int(np.count_nonzero(self.acquired))

    def _check_system(self, system: str) -> None:
        if system not in self.systems:
            raise KeyError(f"{self.path}: no system {system!r} (the map holds {', '.join(self.systems)})")

    def _systems(self, systems) -> tuple[str, ...]:
        if systems is None:
            return self.systems
        if isinstance(systems, str):
            systems = [systems]
        for s in systems:
            self._check_system(s)
        return tuple(systems)

    def _blocks(self, chunk_spots: int) -> Iterator[tuple[int, int, int, int]]:
        ny, nx = self.shape
        if nx <= chunk_spots:
            rows = chunk_spots // nx
            for y0 in range(0, ny, rows):
                yield y0, min(y0 + rows, ny), 0, nx
            return
        # Rows wider than a chunk: column blocks, aligned to the file's chunk width where possible.
        cx = min(ds.chunks[1] if ds.chunks else 1 for ds in self._spectra.values())
        width = max(cx, chunk_spots - chunk_spots % cx) if chunk_spots >= cx else chunk_spots
        for y in range(ny):
            for x0 in range(0, nx, width):
                yield y, y + 1, x0, min(x0 + width, nx)


def validate(path) -> None:
    """Raise PairedMapFormatError naming the first way `path` violates the paired-map contract."""
    with PairedMapReader(path):
        pass
