"""Grouping spots into row runs, so HDF5 is called once per run instead of once per spot."""

from __future__ import annotations

import h5py
import numpy as np


def sorted_runs(iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(order, runs): `order` sorts the spots by (iy, ix); each run [a, b) of the sorted spots
    is one row with consecutive columns."""
    iy = np.asarray(iy, dtype=np.int64)
    ix = np.asarray(ix, dtype=np.int64)
    order = np.lexsort((ix, iy))
    if order.size == 0:
        return order, []
    sy, sx = iy[order], ix[order]
    breaks = np.flatnonzero((np.diff(sy) != 0) | (np.diff(sx) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [order.size]])
    return order, list(zip(starts.tolist(), ends.tolist()))


def contiguous_ranges(values: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique integers as half-open ranges: [1, 2, 3, 7] -> [(1, 4), (7, 8)]."""
    values = np.asarray(values, dtype=np.int64)
    if values.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    starts = values[np.concatenate([[0], breaks])]
    ends = values[np.concatenate([breaks - 1, [values.size - 1]])] + 1
    return list(zip(starts.tolist(), ends.tolist()))


def direct_chunk_width(dset: h5py.Dataset) -> int | None:
    """Columns per chunk when whole chunks may be written as raw bytes: chunks of one row by
    all pixels and no filter (a file from another program may be chunked or compressed otherwise)."""
    chunks = dset.chunks
    if chunks is None or chunks[0] != 1 or chunks[2:] != dset.shape[2:]:
        return None
    if dset.id.get_create_plist().get_nfilters() != 0:
        return None
    return chunks[1]


def _rows(source: np.ndarray, rows: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """source[rows]: a view when the rows follow each other, else gathered into `scratch`
    (small and reused, so a reversed snake row costs no fresh memory)."""
    first = int(rows[0])
    if rows.size == 1 or np.all(np.diff(rows) == 1):
        return source[first:first + rows.size]
    out = scratch[:rows.size]
    np.take(source, rows, axis=0, out=out)
    return out


def write_runs(dset: h5py.Dataset, source: np.ndarray, rows: np.ndarray, iy: np.ndarray, ix: np.ndarray,
               runs) -> None:
    """For each run [a, b): dset[iy[a], ix[a]:ix[a]+b-a] = source[rows[a:b]].

    Runs are cut at chunk boundaries; whole chunks go in directly (no trip
    through the chunk cache), and source rows that follow each other are
    written without copying them first.
    """
    cx = direct_chunk_width(dset)
    nx = dset.shape[1]
    step = cx or nx
    scratch = np.empty((min(step, len(rows)),) + source.shape[1:], source.dtype)
    for a, b in runs:
        y, x0 = int(iy[a]), int(ix[a])
        x1 = x0 + (b - a)
        x = x0
        while x < x1:
            chunk_start = x - x % step
            end = min(chunk_start + step, nx, x1)
            piece = _rows(source, rows[a + x - x0:a + end - x0], scratch)
            if cx is not None and x == chunk_start and end == chunk_start + cx:
                dset.id.write_direct_chunk((y, x, 0), np.ascontiguousarray(piece))
            else:
                dset[y, x:end] = piece
            x = end


def write_derived_values(group: h5py.Group, iy, ix, shape, *, spectra=None, label=None, novelty=None) -> None:
    iy = np.atleast_1d(np.asarray(iy, dtype=np.int64))
    ix = np.atleast_1d(np.asarray(ix, dtype=np.int64))
    k = iy.size
    if ix.shape != (k,):
        raise ValueError(f"iy and ix must have the same length, got {iy.shape} and {ix.shape}")
    if k and (iy.min() < 0 or ix.min() < 0 or iy.max() >= shape[0] or ix.max() >= shape[1]):
        raise IndexError(f"derived spots outside the {shape[0]}x{shape[1]} map")
    order, runs = sorted_runs(iy, ix)
    iy, ix = iy[order], ix[order]
    values = {}
    if spectra is not None:
        n = group["spectra"].shape[2]
        arr = np.asarray(spectra, dtype=np.float32)
        # reshape(k, -1) cannot infer the pixel count of zero spots, hence the size test first.
        if arr.size != k * n or (arr.ndim == 2 and arr.shape != (k, n)):
            raise ValueError(f"{group.name}/spectra: expected [{k}, {n}], got {np.shape(spectra)}")
        values["spectra"] = arr.reshape(k, n)[order]
    if label is not None:
        values["label"] = np.broadcast_to(np.asarray(label, dtype=np.int16), (k,))[order]
    if novelty is not None:
        values["novelty"] = np.broadcast_to(np.asarray(novelty, dtype=np.float32), (k,))[order]
    for name, arr in values.items():
        dset = group[name]
        for a, b in runs:
            y, x0 = int(iy[a]), int(ix[a])
            dset[y, x0:x0 + b - a] = arr[a:b]
