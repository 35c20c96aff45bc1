"""Writing live results into ``/entry/transferred`` of a paired map (spec/paired-map-hdf5.md).

The writing itself is the map store's (acquisition.store.write_transferred); this only
buffers results by spot and hands them over in blocks. It is imported by the command line
only, so the streaming core does not depend on acquisition.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .protocol import MessageError, StreamMessage
from .results import TransferResult

log = logging.getLogger(__name__)


class RecorderUnavailable(RuntimeError):
    pass


class TransferRecorder:
    """Buffer ``transfer`` results with map positions and write them to an existing paired map.

    A block is written every ``flush_spectra`` results; if the map is busy (a replay reads
    it, an acquisition writes it) the results stay buffered and are written at ``close()``,
    where a failure is raised. Results whose (iy, ix) lies outside the map are counted in
    ``outside`` and not written, so one stray index cannot make the map refuse the rest.
    """

    def __init__(self, path: str | Path, *, flush_spectra: int = 8192, wavelengths=None,
                 trust_threshold: float | None = None):
        try:
            from acquisition.store import (PairedMapError, PairedMapReader, finite_threshold, write_transferred,
                                           write_transferred_trust)
        except ImportError as exc:
            raise RecorderUnavailable(f"recording needs acquisition.store.write_transferred, which is not "
                                      f"available here: {exc}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist; --out must be an existing paired map")
        self._write = write_transferred
        self._write_trust = write_transferred_trust
        # the worker's "do not trust" level (its control socket's model reply): with it, the results'
        # expected_rel_error is recorded with the untrusted flag; without it, not at all
        self.trust_threshold = finite_threshold(trust_threshold)
        self.untrusted = 0
        self.trust_not_recorded = 0
        self.shape = _map_shape(PairedMapReader, self.path)
        self._busy_errors = (OSError, PairedMapError)
        self.wavelengths = wavelengths   # only needed when the map has no primary axis of that length
        self.flush_spectra = flush_spectra
        self.model = ""
        self.written = 0
        self.skipped = 0
        self.outside = 0
        self.malformed = 0
        self._parts: list[tuple[np.ndarray, ...]] = []   # iy, ix, spectra, label, novelty, expected_rel_error
        self._buffered = 0

    def add(self, message: StreamMessage) -> None:
        if message.topic != "transfer":
            return
        try:
            result = TransferResult.from_message(message)
        except MessageError as exc:
            self.malformed += 1
            log.warning("unreadable transfer message not recorded: %s", exc.reason)
            return
        self.add_result(result)

    def add_result(self, result: TransferResult) -> None:
        if not result.has_position:
            self.skipped += result.k
            return
        keep = (result.iy >= 0) & (result.ix >= 0)
        if self.shape is not None:
            keep &= (result.iy < self.shape[0]) & (result.ix < self.shape[1])
        self.outside += int(result.k - keep.sum())
        if not keep.any():
            return
        trust = (result.expected_rel_error[keep] if result.expected_rel_error is not None
                 else np.full(int(keep.sum()), np.nan, np.float32))
        self._parts.append((result.iy[keep], result.ix[keep], result.spectra[keep].copy(), result.label[keep],
                            result.novelty[keep], np.asarray(trust, np.float32)))
        self.model = result.model or self.model
        self._buffered += int(keep.sum())
        if self._buffered >= self.flush_spectra:
            self.flush(quiet=True)

    def flush(self, *, quiet: bool = False) -> None:
        if not self._parts:
            return
        iy, ix, spectra, label, novelty, trust = (np.concatenate(col) for col in zip(*self._parts))
        rated = np.isfinite(trust)
        try:
            self._write(self.path, iy, ix, spectra, label, novelty, model_id=self.model, wavelengths=self.wavelengths)
            # the store clears the written spots' earlier trust; this writes the results' own
            if rated.any() and self.trust_threshold is not None:
                self._write_trust(self.path, iy[rated], ix[rated], trust[rated], self.trust_threshold)
        except self._busy_errors as exc:
            if not quiet:
                raise
            log.info("map %s busy (%s); keeping %d results buffered", self.path, exc, self._buffered)
            return
        if self.trust_threshold is None:
            self.trust_not_recorded += int(rated.sum())
        else:
            self.untrusted += int((trust[rated] > self.trust_threshold).sum())
        self.written += len(iy)
        self._parts.clear()
        self._buffered = 0

    def close(self) -> None:
        """Write what is buffered. If the map refuses it, the results are saved to
        ``<map>.transferred.npz`` beside it and the error raised names that file."""
        try:
            self.flush()
        except Exception as exc:
            fallback = self.path.with_name(self.path.name + ".transferred.npz")
            iy, ix, spectra, label, novelty, trust = (np.concatenate(col) for col in zip(*self._parts))
            np.savez(fallback, iy=iy, ix=ix, spectra=spectra, label=label, novelty=novelty, expected_rel_error=trust,
                     model_id=self.model)
            raise RuntimeError(f"{exc}; the {len(iy)} results were saved to {fallback} instead") from exc
        if self.trust_not_recorded:
            log.warning("%d results carried expected_rel_error, not recorded: the worker's trust threshold is "
                        "unknown (give --control; libs-transfer predict writes it afterwards)", self.trust_not_recorded)
        if self.skipped:
            log.warning("%d results had no iy/ix and were not recorded", self.skipped)
        if self.outside:
            log.warning("%d results lay outside the %s map and were not recorded", self.outside, self.shape)


def _map_shape(reader_class, path: Path) -> tuple[int, int] | None:
    """(ny, nx) of the map, or None if it cannot be read now (then the store checks each write)."""
    for live in (False, True):
        try:
            with reader_class(path, live=live) as reader:
                return tuple(int(v) for v in reader.shape)
        except Exception:  # busy or not (yet) a readable map: the write will say what is wrong
            continue
    return None
