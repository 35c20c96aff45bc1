"""Paired-map data for training and evaluation, read out of core.

A paired map is read through the store (`acquisition.store.PairedMapReader`)
chunk by chunk; every chunk is checked (finite values), baseline corrected
and scaled (`transfer.preprocess`), and batches are drawn after shuffling
within a buffer of chunks, so memory stays bounded however large the map.
Small maps are preprocessed once and kept in memory instead.

Everything is seeded: the order of an epoch depends only on (seed, epoch),
so a resumed training sees exactly the batches it would have seen.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from acquisition.shared.alignment import LineOffset, ShiftCheck
from acquisition.shared.progress import Progress
from acquisition.shared.systems import SYSTEM_NAMES
from acquisition.shared.spectral import AxisResampler, axis_offset_px, baseline_correct, recalibrated_axis
from acquisition.store import PairedMapReader
from transfer.preprocess import DEFAULT_SCALING, SpectrumPreprocessor, WavelengthMismatchError

log = logging.getLogger(__name__)



class TransferDataError(ValueError):
    """A map cannot be used for transfer; the message says which file and why."""


# -- checks -----------------------------------------------------------------

@dataclass(frozen=True)
class MapInfo:
    path: Path
    n_spots: int
    shape: tuple[int, int]
    wavelengths: dict[str, np.ndarray]

    def n_pixels(self, system: str) -> int:
        return int(self.wavelengths[system].shape[0])


def inspect_map(path: str | Path, systems: Sequence[str] = SYSTEM_NAMES) -> MapInfo:
    """Opens a paired map and checks it holds `systems` and acquired spots."""
    path = Path(path)
    if not path.exists():
        raise TransferDataError(f"{path}: no such file")
    with PairedMapReader(path) as reader:
        missing = [s for s in systems if s not in reader.systems]
        if missing:
            raise TransferDataError(
                f"{path}: the map has no '{missing[0]}' system (it holds: {', '.join(reader.systems)})")
        if reader.n_acquired == 0:
            raise TransferDataError(f"{path}: the map has no acquired spots")
        wavelengths = {s: np.asarray(reader.wavelengths(s), dtype=np.float64) for s in systems}
        return MapInfo(path, int(reader.n_acquired), tuple(reader.shape[:2]), wavelengths)


def check_axis(path: Path | str, system: str, found: np.ndarray, expected: np.ndarray,
               what: str = "the model") -> bool:
    """The wavelength axis of `system` in a map must be the one `what` was trained on, or the
    same detector recalibrated on another day; returns True for the latter.

    Same pixel count, and wavelengths within a tenth of a pixel (the rule of
    `transfer.preprocess.check_wavelengths`), or within
    `acquisition.shared.spectral.MAX_RECALIBRATION_PX` pixels everywhere: the readers
    (:func:`iter_raw_chunks` with ``axes``) then resample that map's spectra onto `expected`.
    """
    if found.shape != expected.shape:
        raise TransferDataError(
            f"{path}: {system} spectra have {found.shape[0]} pixels, {what} expects {expected.shape[0]}")
    try:
        return recalibrated_axis(found, expected, name=f"{system} wavelengths")
    except WavelengthMismatchError as exc:
        raise TransferDataError(f"{path}: {system} wavelength axis does not match {what}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _resampler(found: bytes, expected: bytes) -> AxisResampler:
    # building one solves a spline per source pixel; a map is read several times over
    return AxisResampler(np.frombuffer(found), np.frombuffer(expected))


#: Spots whose mean spectrum says where a map's lines sit.
ALIGNMENT_SPOTS = 4096


def line_offsets(path: Path | str, references: Mapping[str, SpectrumPreprocessor],
                 axes: Mapping[str, np.ndarray] | None = None) -> dict[str, LineOffset | None]:
    """{system: where the map's lines sit against the training mean of ``references[system]``}
    (`acquisition.shared.alignment.line_offset`), measured on the mean of the first
    :data:`ALIGNMENT_SPOTS` spots baseline-corrected as the model corrects them, after any
    recalibration onto the model's axis (``axes``, default the references' axes). None for a
    system whose spectra have too little structure to say."""
    path = Path(path)
    stat = path.stat()
    found = inspect_map(path, list(references)).wavelengths
    offsets = {}
    for system, reference in references.items():
        expected = np.asarray((axes or {}).get(system, reference.wavelengths), np.float64)
        mean = np.asarray(reference.scaler.mean_, np.float64)
        offsets[system] = _line_offset(str(path.resolve()), stat.st_mtime_ns, stat.st_size, system,
                                       found[system].tobytes(), expected.tobytes(), mean.tobytes(),
                                       reference.min_window, reference.smooth_window)
    return offsets


@functools.lru_cache(maxsize=16)
def _line_offset(path: str, mtime_ns: int, size: int, system: str, found: bytes, expected: bytes, mean: bytes,
                 min_window: int, smooth_window: int) -> LineOffset | None:
    # a command reads one map several times over (scalers, samples, the evaluation): measured once
    found_axis, expected_axis = np.frombuffer(found), np.frombuffer(expected)
    recalibrate = (_resampler(found, expected) if check_axis(path, system, found_axis, expected_axis) else None)
    check = ShiftCheck(np.frombuffer(mean), max_spots=ALIGNMENT_SPOTS)
    with PairedMapReader(path) as reader:
        for chunk in reader.iter_chunks(systems=[system], chunk_spots=1024):
            spectra = np.asarray(chunk.spectra[system], np.float32)[: check.max_spots - check.n]
            spectra = spectra[np.isfinite(spectra).all(axis=1)]
            if recalibrate is not None:
                spectra = recalibrate(spectra)
            check.add(baseline_correct(spectra, min_window, smooth_window))
            if not check.wants_more:
                break
    return check.offset()


def axis_resamplers(path: Path | str, found: Mapping[str, np.ndarray], axes: Mapping[str, np.ndarray],
                    align: Mapping[str, SpectrumPreprocessor] | None = None) -> dict[str, AxisResampler]:
    """{system: resampler onto the axis in `axes`} for the systems of the map at `path` that need
    one: an axis in the map (`found`) recalibrated from the model's, or (systems in `align`)
    lines that sit at least `alignment.ALIGN_MIN_PX` from those of that preprocessor's
    training mean (:func:`line_offsets`); the two combine into one resampler. Raises
    :class:`TransferDataError` for an axis that is neither the model's nor a recalibration."""
    offsets = line_offsets(path, {s: r for s, r in (align or {}).items() if s in axes}, axes)
    resamplers = {}
    for system, expected in axes.items():
        here = np.asarray(found[system], np.float64)
        expected = np.asarray(expected, np.float64)
        recalibrated = check_axis(path, system, here, expected)
        offset = offsets.get(system)
        if offset is not None and offset.worth_aligning:
            log.info("%s: the %s lines sit %s from the model's; its spectra are aligned onto the model's "
                     "axis from the map's own lines", Path(path).name, system, offset.describe())
            here = offset.seen_axis(here)
        elif recalibrated:
            log.info("%s: the %s axis was calibrated %.2f px away from the model's; its spectra are resampled "
                     "onto the model's axis", Path(path).name, system, axis_offset_px(here, expected).max())
        else:
            continue
        resamplers[system] = _resampler(here.tobytes(), expected.tobytes())
    return resamplers


def check_finite(path: Path | str, system: str, spectra: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> None:
    bad = ~np.isfinite(spectra).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise TransferDataError(
            f"{path}: {system} spectrum at spot (iy={int(iy[first])}, ix={int(ix[first])}) "
            f"holds NaN or infinite values ({int(bad.sum())} such spectra in this chunk)")


# -- preprocessing -------------------------------------------------------------

def new_preprocessor(wavelengths: np.ndarray, system: str, scaling: str = DEFAULT_SCALING) -> SpectrumPreprocessor:
    """An unfitted causal preprocessor (paper's baseline windows) for one system."""
    return SpectrumPreprocessor(wavelengths, scaling=scaling, name=system)


def fit_preprocessors(paths: Sequence[Path | str], wavelengths: Mapping[str, np.ndarray], chunk_spots: int,
                      progress: bool = True, *, scaling: str | Mapping[str, str]) -> dict[str, SpectrumPreprocessor]:
    """One streaming pass over `paths`: scaler statistics of the baseline-corrected spectra.

    `scaling` ("global" or "pixel", or one per system) has no default: statistics fitted
    with another scaling than the model's would silently mis-scale its inputs."""
    per_system = {s: scaling if isinstance(scaling, str) else scaling[s] for s in wavelengths}
    fitted = {s: new_preprocessor(wl, s, per_system[s]) for s, wl in wavelengths.items()}
    for _, _, _, spectra in iter_raw_chunks(paths, list(wavelengths), chunk_spots, progress,
                                            desc="fitting scalers", axes=wavelengths):
        for system, preprocessor in fitted.items():
            preprocessor.partial_fit(spectra[system])
    return fitted


# -- reading -----------------------------------------------------------------

def iter_raw_chunks(paths: Sequence[Path | str], systems: Sequence[str], chunk_spots: int,
                    progress: bool = False, desc: str = "reading", *,
                    axes: Mapping[str, np.ndarray] | None = None,
                    align: Mapping[str, SpectrumPreprocessor] | None = None
                    ) -> Iterator[tuple[Path, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """(path, iy, ix, {system: raw float32 [k, n]}) for every chunk of every map, checked finite.

    ``axes`` ({system: nm}, e.g. the model's): a map whose axis of that system is a
    recalibration of it (:func:`check_axis`) has its spectra resampled onto it. ``align``
    ({system: fitted preprocessor}, e.g. the model's): a map whose lines of that system sit
    away from the preprocessor's training mean is aligned onto ``axes`` from its own lines
    (:func:`axis_resamplers`)."""
    for path in map(Path, paths):
        with PairedMapReader(path) as reader:
            wanted = {s: a for s, a in (axes or {}).items() if s in systems}
            resamplers = axis_resamplers(path, {s: reader.wavelengths(s) for s in wanted}, wanted, align)
            bar = Progress(int(reader.n_acquired), desc=f"{desc} {path.name}", unit="spot", enabled=progress)
            for chunk in reader.iter_chunks(systems=list(systems), chunk_spots=chunk_spots):
                spectra = {s: np.asarray(chunk.spectra[s], dtype=np.float32) for s in systems}
                iy, ix = np.asarray(chunk.iy), np.asarray(chunk.ix)
                for system in systems:
                    check_finite(path, system, spectra[system], iy, ix)
                for system, resample in resamplers.items():
                    spectra[system] = resample(spectra[system])
                bar.update(len(iy))
                yield path, iy, ix, spectra
            bar.close()


def iter_preprocessed_chunks(paths: Sequence[Path | str], preprocessors: Mapping[str, SpectrumPreprocessor],
                             chunk_spots: int, progress: bool = False, desc: str = "reading", *, align: bool = True
                             ) -> Iterator[tuple[Path, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Chunks of every map through the fitted ``preprocessors``; each map on their axes and
    (``align``) with its lines aligned onto their training means (:func:`iter_raw_chunks`)."""
    axes = {s: p.wavelengths for s, p in preprocessors.items()}
    for path, iy, ix, spectra in iter_raw_chunks(paths, list(preprocessors), chunk_spots, progress, desc, axes=axes,
                                                 align=preprocessors if align else None):
        yield path, iy, ix, {s: p.transform(spectra[s]) for s, p in preprocessors.items()}


def sample_preprocessed(paths: Sequence[Path | str], preprocessors: Mapping[str, SpectrumPreprocessor],
                        max_spots: int, seed: int, chunk_spots: int, progress: bool = False, *, align: bool = True
                        ) -> dict[str, np.ndarray]:
    """A seeded uniform random subset of at most `max_spots` spots over all `paths`, preprocessed
    as :func:`iter_preprocessed_chunks` does."""
    totals = [inspect_map(p, list(preprocessors)).n_spots for p in paths]
    total = sum(totals)
    rng = np.random.default_rng([seed, 7])
    chosen = np.sort(rng.choice(total, size=min(max_spots, total), replace=False))
    parts: dict[str, list[np.ndarray]] = {s: [] for s in preprocessors}
    offset = 0
    axes = {s: p.wavelengths for s, p in preprocessors.items()}
    for _, iy, _, spectra in iter_raw_chunks(paths, list(preprocessors), chunk_spots, progress, "sampling",
                                             axes=axes, align=preprocessors if align else None):
        lo, hi = np.searchsorted(chosen, [offset, offset + len(iy)])
        if hi > lo:
            local = chosen[lo:hi] - offset
            for system, prep in preprocessors.items():
                parts[system].append(prep.transform(spectra[system][local]))
        offset += len(iy)
    return {s: np.concatenate(v) for s, v in parts.items()}


class ArrayBatches:
    """Seeded batches from arrays already in memory ({system: float32 [n, pixels]}).

    `epoch(e)` yields dicts {system: array [batch, pixels]} in an order fixed by (seed, e).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int = 0,
                 shuffle: bool = True):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise TransferDataError(f"paired arrays differ in length: {sorted(lengths)}")
        self.arrays = {s: np.ascontiguousarray(a, dtype=np.float32) for s, a in arrays.items()}
        self.n_spots = lengths.pop()
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle

    def rebatched(self, batch_size: int, *, seed: int | None = None) -> "ArrayBatches":
        """The same data (shared, not copied) drawn in batches of another size."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        other = copy.copy(self)
        other.batch_size = batch_size
        if seed is not None:
            other.seed = seed
        return other

    @property
    def n_batches(self) -> int:
        return -(-self.n_spots // self.batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def epoch(self, epoch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        order = self._rng(epoch).permutation(self.n_spots) if self.shuffle else np.arange(self.n_spots)
        for start in range(0, self.n_spots, self.batch_size):
            index = order[start:start + self.batch_size]
            yield {s: a[index] for s, a in self.arrays.items()}


class PairedBatches(ArrayBatches):
    """Seeded batches of preprocessed spectra from one or more paired maps.

    Maps whose preprocessed size fits in `in_memory_max_bytes` are preprocessed
    once and held in RAM; larger ones are streamed chunk by chunk, preprocessed
    per chunk and shuffled within a buffer of `buffer_chunks` chunks.
    """

    def __init__(self, paths: Sequence[Path | str], preprocessors: Mapping[str, SpectrumPreprocessor],
                 batch_size: int, *, seed: int = 0, shuffle: bool = True, chunk_spots: int = 4096,
                 buffer_chunks: int = 8, in_memory_max_bytes: int = 2 << 30, progress: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.paths = [Path(p) for p in paths]
        self.preprocessors = dict(preprocessors)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.chunk_spots = chunk_spots
        self.buffer_chunks = buffer_chunks
        infos = [inspect_map(p, list(self.preprocessors)) for p in self.paths]
        self.n_spots = sum(i.n_spots for i in infos)
        width = sum(infos[0].n_pixels(s) for s in self.preprocessors)
        self.in_memory = self.n_spots * width * 4 <= in_memory_max_bytes
        self.arrays: dict[str, np.ndarray] | None = self._load_all(progress) if self.in_memory else None

    def _load_all(self, progress: bool) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {s: [] for s in self.preprocessors}
        for _, _, _, spectra in iter_preprocessed_chunks(self.paths, self.preprocessors, self.chunk_spots,
                                                         progress, "preprocessing"):
            for s, v in spectra.items():
                parts[s].append(v)
        return {s: np.concatenate(v) for s, v in parts.items()}

    def epoch(self, epoch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        if self.arrays is not None:
            yield from super().epoch(epoch)
        else:
            yield from self._epoch_streamed(epoch)

    def _epoch_streamed(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        rng = self._rng(epoch)
        buffer: dict[str, list[np.ndarray]] = {s: [] for s in self.preprocessors}
        carry: dict[str, np.ndarray] | None = None
        n_buffered = 0

        def drain(final: bool) -> Iterator[dict[str, np.ndarray]]:
            nonlocal carry
            pool = {s: np.concatenate(([carry[s]] if carry is not None else []) + v)
                    for s, v in buffer.items()}
            n = len(next(iter(pool.values())))
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            full = n if final else n - n % self.batch_size
            for start in range(0, full, self.batch_size):
                index = order[start:start + self.batch_size]
                yield {s: a[index] for s, a in pool.items()}
            carry = {s: a[order[full:]] for s, a in pool.items()} if full < n else None

        for _, _, _, spectra in iter_preprocessed_chunks(self.paths, self.preprocessors, self.chunk_spots):
            for s, v in spectra.items():
                buffer[s].append(v)
            n_buffered += 1
            if n_buffered >= self.buffer_chunks:
                yield from drain(final=False)
                buffer = {s: [] for s in self.preprocessors}
                n_buffered = 0
        if n_buffered or carry is not None:
            yield from drain(final=True)
