"""What the live view knows about the map: per-spot values, a bounded spectrum store, the wire format.

Memory is bounded by the map shape and a fixed spectrum budget, never by how long the
map runs: five [ny, nx] arrays (label int16; emission, novelty, expected relative error,
transfer error float32: 18 bytes per spot) plus at most ``spectra_budget_bytes`` of
transferred spectra.
"""

from __future__ import annotations

import json
import threading

import numpy as np

# one delta/snapshot record per spot on the wire, field after field: index, label, total emission,
# novelty, the model's expected relative error (trust), the transfer error against the measured primary
RECORD_FIELDS = (("index", "<u4"), ("label", "<i2"), ("emission", "<f4"), ("novelty", "<f4"), ("trust", "<f4"),
                 ("error", "<f4"))
VALUE_FIELDS = ("emission", "novelty", "trust", "error")
DEFAULT_SPECTRA_BUDGET = 256 << 20
# colour limits come from a random sample of shown spots, so their cost does not grow with the map
LIMIT_SAMPLE = 20_000


class SpectrumStore:
    """The latest transferred spectrum per spot (iy, ix), in one preallocated float32 [capacity, n] block.

    Capacity is every spot of the map when that fits the budget, else the most recent
    ``budget // (4 n)`` spots (a ring: the oldest spot's spectrum is overwritten).
    """

    def __init__(self, n_spots: int, budget_bytes: int = DEFAULT_SPECTRA_BUDGET):
        self.n_spots = n_spots
        self.budget_bytes = budget_bytes
        self.n_pixels: int | None = None
        self._block: np.ndarray | None = None
        self._slot_of: dict[tuple[int, int], int] = {}
        self._spot_in: list[tuple[int, int] | None] = []
        self._next = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return 0 if self._block is None else self._block.shape[0]

    @property
    def nbytes(self) -> int:
        return 0 if self._block is None else self._block.nbytes

    def put(self, iy, ix, spectra: np.ndarray) -> None:
        """Keep ``spectra`` [k, n] as the latest of spots (iy[k], ix[k])."""
        for key_y, key_x, spectrum in zip(iy.tolist(), ix.tolist(), spectra):
            self.put_one(key_y, key_x, spectrum)

    def put_one(self, iy: int, ix: int, spectrum: np.ndarray) -> None:
        """Keep ``spectrum`` [n] as the latest of spot (iy, ix)."""
        key = (iy, ix)
        with self._lock:
            if self._block is None or spectrum.shape[0] != self.n_pixels:
                self._allocate(spectrum.shape[0])
            slot = self._slot_of.get(key)
            if slot is None:
                slot = self._next
                self._next = (self._next + 1) % self.capacity
                evicted = self._spot_in[slot]
                if evicted is not None:
                    del self._slot_of[evicted]
                self._spot_in[slot] = key
                self._slot_of[key] = slot
            self._block[slot] = spectrum

    def get(self, iy: int, ix: int) -> np.ndarray | None:
        with self._lock:
            slot = self._slot_of.get((int(iy), int(ix)))
            return None if slot is None else self._block[slot].copy()

    def _allocate(self, n_pixels: int) -> None:
        self.n_pixels = n_pixels
        capacity = max(1, min(self.n_spots, self.budget_bytes // (4 * n_pixels)))
        # written once now, so that no result later pays for the memory's first touch
        self._block = np.zeros((capacity, n_pixels), np.float32)
        self._block.fill(0.0)
        self._spot_in = [None] * capacity
        self._slot_of = {}
        self._next = 0


class MapState:
    """Per-spot values of the map, [ny, nx] each; NaN / -1 where nothing arrived yet."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = (int(shape[0]), int(shape[1]))
        n = self.shape[0] * self.shape[1]
        self.label = np.full(n, -1, np.int16)
        self.emission = np.full(n, np.nan, np.float32)
        self.novelty = np.full(n, np.nan, np.float32)
        self.trust = np.full(n, np.nan, np.float32)
        self.error = np.full(n, np.nan, np.float32)
        self.shown = 0
        self._rng = np.random.default_rng(0)

    @property
    def size(self) -> int:
        return self.label.size

    def flat(self, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
        return (iy * self.shape[1] + ix).astype(np.int64)

    def grown_to(self, ny: int, nx: int, *, max_spots: int | None = None) -> "MapState":
        """A copy at least ny x nx (each side doubled as needed, exactly ny x nx where doubling would pass
        ``max_spots``), same values at the same (iy, ix)."""
        new_ny, new_nx = self.shape
        while new_ny < ny:
            new_ny *= 2
        while new_nx < nx:
            new_nx *= 2
        if max_spots is not None and new_ny * new_nx > max_spots:
            new_ny, new_nx = max(ny, self.shape[0]), max(nx, self.shape[1])
        grown = MapState((new_ny, new_nx))
        old = np.arange(self.size)
        spots = grown.flat(old // self.shape[1], old % self.shape[1])
        for name in ("label", *VALUE_FIELDS):
            getattr(grown, name)[spots] = getattr(self, name)
        grown.shown = self.shown
        return grown

    def apply(self, spots: np.ndarray, label: np.ndarray, emission: np.ndarray, novelty: np.ndarray,
              trust: np.ndarray) -> None:
        newly = np.count_nonzero(self.label[spots] < 0)
        self.label[spots] = label
        self.emission[spots] = emission
        self.novelty[spots] = novelty
        self.trust[spots] = trust
        self.shown += int(newly)

    def apply_error(self, spots: np.ndarray, error: np.ndarray) -> None:
        self.error[spots] = error

    def records(self, spots: np.ndarray) -> bytes:
        """The wire records of ``spots`` (flat indices), fields as in RECORD_FIELDS, field after field."""
        spots = np.asarray(spots, np.uint32)
        parts = [spots.astype("<u4"), self.label[spots].astype("<i2")]
        if spots.size % 2:
            parts.append(np.zeros(1, "<i2"))   # keep the float32 fields 4-byte aligned
        parts += [getattr(self, name)[spots].astype("<f4") for name in VALUE_FIELDS]
        return b"".join(p.tobytes() for p in parts)

    def filled(self) -> np.ndarray:
        return np.flatnonzero(self.label >= 0).astype(np.uint32)

    def limits(self) -> dict[str, list[float] | None]:
        """Colour limits Q0.01-Q0.99 per map, from at most LIMIT_SAMPLE shown spots."""
        out = {}
        for name in VALUE_FIELDS:
            values = getattr(self, name)
            finite = values[np.isfinite(values)]
            if finite.size > LIMIT_SAMPLE:
                finite = finite[self._rng.integers(0, finite.size, LIMIT_SAMPLE)]
            if finite.size == 0:
                out[name] = None
                continue
            lo, hi = np.quantile(finite, [0.01, 0.99])
            out[name] = [float(lo), float(hi) if hi > lo else float(lo) + 1e-6]
        return out


def encode_frame(header: dict, spots: np.ndarray | None = None, state: MapState | None = None) -> bytes:
    """One websocket message: uint32 header length, UTF-8 JSON header padded to 4 bytes, records."""
    body = b"" if spots is None or state is None else state.records(spots)
    header = {**header, "count": 0 if spots is None else int(len(spots))}
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    text += b" " * (-len(text) % 4)
    return len(text).to_bytes(4, "little") + text + body


def decode_frame(frame: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The inverse of :func:`encode_frame` (what the page does in JavaScript): header, records by field."""
    size = int.from_bytes(frame[:4], "little")
    header = json.loads(frame[4:4 + size])
    k, offset = header["count"], 4 + size
    records = {}
    for name, dtype in RECORD_FIELDS:
        dtype = np.dtype(dtype)
        records[name] = np.frombuffer(frame, dtype, k, offset)
        offset += k * dtype.itemsize
        if name == "label" and k % 2:
            offset += 2
    return header, records
