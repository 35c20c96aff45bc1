"""PairedMapWriter: create or resume a paired map and write it spot by spot.

Flush policy (measured with bench/store.py; see docs/store.md):

* write_spot() appends the whole spot to the journal (journal.py) with one
  os.pwritev before it returns, so a spot survives kill -9 of the writer once
  the call has returned; only the spot in flight can be lost.
* Spots are kept in a batch buffer and committed to the HDF5 file every
  `batch_spots` spots or `commit_interval_s` seconds (checked on each write),
  on flush(), close() and finish(): spectra and the /entry/scan fields are
  written and flushed, then `acquired` is set for those spots and flushed
  again, so `acquired` is the last thing on disk for a spot. The journal then
  starts over.
* The file is in SWMR mode after creation: a live reader sees each committed
  batch, and a killed writer leaves a file that opens (in SWMR read mode, or
  normally once resumed) with `acquired` telling exactly which spots are good.
* resume() replays the journal into the file, so the spots that were only in
  the journal when the writer died are committed before writing goes on.
* write_spots() (blocks of spots: a fly row, a batch of frames) journals the
  block the same way (one os.pwritev for all its records) and returns: it is
  safe against kill -9 once the call has returned. With durable=False (an
  import or a simulation that can simply be run again) the block skips the
  journal and is committed to the file before the call returns, so its bytes
  are written once; a kill during the call then loses that call's spots.

Flushing HDF5 after every spot instead would rewrite a partly filled 256 KiB
chunk per spot; the journal keeps each spot a single sequential write.
Derived data (write_derived) goes to HDF5 directly and reaches the disk with
the next commit; it is not journalled (it can be recomputed from the spectra).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from .contract import check_contract, check_expectations
from .h5files import open_for_update
from acquisition.shared.systems import SYSTEM_NAMES

from .journal import SpaceReserve, SpotJournal, journal_path
from .layout import MapLayout, MapWriteError, PairedMapError, default_creator
from .runs import contiguous_ranges, sorted_runs, write_derived_values, write_runs
from .skeleton import checked_wavelengths, create_skeleton, now_iso

log = logging.getLogger(__name__)

# What a failed disk write raises through h5py or os (ENOSPC, EIO, a failed HDF5 flush).
WRITE_FAILURES = (OSError, RuntimeError)
DEFAULT_BATCH_SPOTS = 256
RESERVE_EXTRA_BYTES = 2 * 1024 * 1024
DEFAULT_COMMIT_INTERVAL_S = 1.0
# Per-dataset chunk cache: holds the partly filled chunks between two commits.
WRITER_CHUNK_CACHE_BYTES = 32 * 1024 * 1024


def _stops_on_write_failure(what: str):
    """A failed write (disk full, I/O error) becomes MapWriteError and ends writing for good:
    after an HDF5 error the library's state is uncertain, so the file is only closed, once."""
    def wrap(method):
        @functools.wraps(method)
        def guarded(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except WRITE_FAILURES as exc:
                if isinstance(exc, PairedMapError):
                    raise
                self._fail(f"{what}: {exc}")
                raise MapWriteError(f"{self.path}: {what} failed: {_first_line(exc)}", in_file=self.n_in_file,
                                    in_journal=self.n_acquired - self.n_in_file) from exc
        return guarded
    return wrap


def _first_line(exc: BaseException) -> str:
    """The gist of an OS or HDF5 error (HDF5's own messages run over several lines)."""
    text = str(exc).strip()
    reason = re.search(r"error message = '([^']*)'", text)
    if reason:
        return f"{text.split(' (')[0]}: {reason.group(1)}"
    return text.splitlines()[0] if text else type(exc).__name__


class PairedMapWriter:
    """Writes one paired map. Use create() or resume(); a context manager whose exit closes."""

    def __init__(self, path: Path, h5: h5py.File, journal: SpotJournal, *, batch_spots: int,
                 commit_interval_s: float):
        self.path = Path(path)
        self._h5 = h5
        self._journal = journal
        info = check_contract(h5)
        self.systems: tuple[str, ...] = info.systems
        entry = h5["entry"]
        first = entry[self.systems[0]]
        x, y = first["x"][()], first["y"][()]
        self.layout = MapLayout(info.shape, info.step_um, info.order, (float(x[0]), float(y[0])))
        self._n_pixels = info.n_pixels
        self._spectra = {s: entry[s]["spectra"] for s in self.systems}
        scan = entry["scan"]
        self._scan = {name: scan[name] for name in ("acquired", "shot_id", "timestamp", "position")}
        self._derived = {name: g for name, g in entry.items() if isinstance(g, h5py.Group)
                         and name not in SYSTEM_NAMES and g.attrs.get("NX_class") == "NXdata"}
        # In-memory copies of the small per-spot datasets (33 bytes a spot): commits write whole rows.
        self._acquired = self._scan["acquired"][()]
        self._shot = self._scan["shot_id"][()]
        self._time = self._scan["timestamp"][()]
        self._pos = self._scan["position"][()]
        self._written = self._acquired == 1
        self._n_written = int(self._written.sum())
        self._batch_spots = int(batch_spots)
        if self._batch_spots < 1:
            raise ValueError(f"batch_spots must be >= 1, got {batch_spots}")
        self._commit_interval_s = float(commit_interval_s)
        self._buffers = {s: np.empty((self._batch_spots, n), np.float32) for s, n in self._n_pixels.items()}
        self._pending: dict[tuple[int, int], int] = {}
        self._first_pending = 0.0
        self.recovered_from_journal = 0
        self._n_in_file = self._n_written
        self._failure: str | None = None
        # Room for HDF5 to write out what it holds (one batch, its metadata) and close cleanly after
        # the disk filled up: a file HDF5 cannot close leaves the interpreter to crash at exit.
        batch_bytes = self._batch_spots * 4 * sum(self._n_pixels.values())
        self._reserve = SpaceReserve(path, batch_bytes + RESERVE_EXTRA_BYTES)
        self._journal.configure(int(scan.attrs["journal_id"]), [self._n_pixels[s] for s in self.systems])

    # -- opening -------------------------------------------------------------

    @classmethod
    def create(cls, path, layout: MapLayout, wavelengths: Mapping[str, np.ndarray], *, title: str = "",
               sample_name: str = "", creator: str | None = None, instrument: dict | None = None,
               sample_truth: dict | None = None, derived: dict | None = None, overwrite: bool = False,
               batch_spots: int = DEFAULT_BATCH_SPOTS,
               commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S) -> "PairedMapWriter":
        """A new, empty map at `path` (refuses to replace a file unless overwrite=True).

        `derived` pre-creates NXdata groups for live results ({"transferred": n_primary}),
        since no object can be created once the file is in SWMR mode.
        """
        path = Path(path)
        if not isinstance(layout, MapLayout):
            raise TypeError(f"layout must be a MapLayout, got {type(layout).__name__}")
        axes = checked_wavelengths(dict(wavelengths))
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it, or resume it")
        journal = SpotJournal(path)
        try:
            journal.reset()
            with h5py.File(path, "w", libver="latest") as f:
                create_skeleton(f, layout, axes, title=title, sample_name=sample_name,
                                creator=creator or default_creator(), instrument=instrument,
                                sample_truth=sample_truth, derived=derived)
            h5 = open_for_update(path, rdcc_nbytes=WRITER_CHUNK_CACHE_BYTES)
        except BaseException:
            journal.close(remove=True)
            path.unlink(missing_ok=True)
            raise
        return cls._start(path, h5, journal, batch_spots, commit_interval_s)

    @classmethod
    def resume(cls, path, *, layout: MapLayout | None = None,
               wavelengths: Mapping[str, np.ndarray] | None = None,
               batch_spots: int = DEFAULT_BATCH_SPOTS,
               commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S) -> "PairedMapWriter":
        """Reopen an unfinished map, recover the journal of a killed writer, and go on.

        Raises PairedMapMismatchError when `layout` or `wavelengths` (if given)
        differ from the file's.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no map to resume")
        journal = SpotJournal(path)  # locks first, so a live writer is never disturbed
        try:
            h5 = open_for_update(path, rdcc_nbytes=WRITER_CHUNK_CACHE_BYTES)
            try:
                info = check_contract(h5)
                if "end_time" in h5["entry"]:
                    raise PairedMapError(f"{path}: the map was finished at "
                                         f"{h5['entry/end_time'][()].decode()}; nothing to resume")
                superblock = h5.id.get_create_plist().get_version()[0]
                if superblock < 3:
                    raise PairedMapError(
                        f"{path}: written in an HDF5 format too old for SWMR (superblock version {superblock}, "
                        "needs 3), so a crash while resuming could damage what it holds; convert it first "
                        "(e.g. `h5repack -L IN.h5 OUT.h5`, or copy it with h5py using libver='latest')")
                if "journal_id" not in h5["entry/scan"].attrs:  # a file from another program
                    h5["entry/scan"].attrs["journal_id"] = np.int64(0)
                check_expectations(path, h5, info, layout, wavelengths)
            except BaseException:
                h5.close()
                raise
        except BaseException:
            journal.close(remove=journal.is_empty())  # a journal with records waits for the next resume
            raise
        return cls._start(path, h5, journal, batch_spots, commit_interval_s, replay=True)

    @classmethod
    def _start(cls, path, h5, journal, batch_spots, commit_interval_s, replay=False) -> "PairedMapWriter":
        try:
            writer = cls(path, h5, journal, batch_spots=batch_spots, commit_interval_s=commit_interval_s)
            if replay:
                writer._replay_journal()
            h5.swmr_mode = True
            h5.flush()
        except BaseException:
            h5.close()
            SpaceReserve.remove(path)
            journal.close(remove=journal.is_empty())
            raise
        return writer

    @classmethod
    def recover(cls, path) -> int:
        """Close an interrupted map cleanly without going on: replay its journal into the file,
        clear the flags its killed writer left (so any HDF5 tool opens it), close. Returns how
        many spots came from the journal. The map stays unfinished, to be resumed."""
        writer = cls.resume(path)
        recovered = writer.recovered_from_journal
        writer.close()
        return recovered

    def _replay_journal(self) -> None:
        n = 0
        for record in self._journal.records():
            self._stage(record.iy, record.ix, dict(zip(self.systems, record.spectra)), record.shot_id,
                        record.timestamp, record.position_um, journal=False)
            n += 1
        self._commit()
        self._journal.reset()
        self.recovered_from_journal = n
        if n:
            log.info("%s: recovered %d spot(s) from the journal of an interrupted writer", self.path, n)

    # -- writing -------------------------------------------------------------

    @property
    def n_acquired(self) -> int:
        """Spots written so far (committed or still in the journal), this session and before."""
        return self._n_written

    @property
    def n_in_file(self) -> int:
        """Spots committed to the HDF5 file (the others written are in the journal)."""
        return self._n_in_file

    @property
    def failure(self) -> str | None:
        """What write failed, if one did (the writer then writes no more)."""
        return self._failure

    def _fail(self, what: str) -> None:
        self._failure = what
        log.error("%s: %s; %d spot(s) in the file, %d more in its journal", self.path, what, self._n_in_file,
                  self._n_written - self._n_in_file)

    def missing(self) -> np.ndarray:
        """(iy, ix) of the spots not written yet, int64 [m, 2], in visiting order."""
        order = self.layout.visit_order()
        return order[~self._written[order[:, 0], order[:, 1]]]

    @_stops_on_write_failure("writing a spot")
    def write_spot(self, iy: int, ix: int, spectra: Mapping[str, np.ndarray], shot_id: int,
                   timestamp: float, position_um: tuple[float, float]) -> None:
        """Record one spot of every system; safe against kill -9 once this returns."""
        self._check_open()
        iy, ix = self._check_index(iy, ix)
        arrays = self._check_spectra(spectra, f"spot ({iy}, {ix})")
        x, y = _position(position_um, f"spot ({iy}, {ix})")
        self._stage(iy, ix, arrays, int(shot_id), float(timestamp), (x, y), journal=True)
        self._maybe_commit()

    @_stops_on_write_failure("writing spots")
    def write_spots(self, iy, ix, spectra: Mapping[str, np.ndarray], shot_id, timestamp, position_um, *,
                    durable: bool = True) -> None:
        """Vectorised write_spot: spectra [k, n] per system; all inputs are checked before any is written.

        The spots are journalled (one write for the block) and committed with the next batch,
        as write_spot does: safe against kill -9 once this returns. durable=False skips the
        journal for data that can be produced again (an import, a simulation): the block goes
        to the HDF5 file directly and is committed before this returns, written once. A spot
        given twice keeps its last pair.
        """
        self._check_open()
        iy = np.atleast_1d(np.asarray(iy, dtype=np.int64))
        ix = np.atleast_1d(np.asarray(ix, dtype=np.int64))
        k = iy.size
        shot = np.broadcast_to(np.asarray(shot_id, dtype=np.int64), (k,))
        times = np.broadcast_to(np.asarray(timestamp, dtype=np.float64), (k,))
        pos = np.asarray(position_um, dtype=np.float64)
        if ix.shape != (k,) or pos.shape != (k, 2):
            raise ValueError(f"write_spots: iy, ix must have the same length and position_um be [k, 2]; "
                             f"got {iy.shape}, {ix.shape}, {pos.shape}")
        outside = (iy < 0) | (iy >= self.layout.ny) | (ix < 0) | (ix >= self.layout.nx)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            self._check_index(iy[i], ix[i])
        extra = set(spectra) - set(self.systems)
        if extra:
            raise ValueError(f"write_spots: the map has no system {sorted(extra)[0]!r}")
        blocks = {}
        for system in self.systems:
            if system not in spectra:
                raise ValueError(f"write_spots: no spectra for system {system!r}")
            block = np.asarray(spectra[system], dtype=np.float32)
            if block.shape != (k, self._n_pixels[system]):
                raise ValueError(f"write_spots: spectra[{system!r}] has shape {block.shape}, "
                                 f"expected ({k}, {self._n_pixels[system]})")
            _check_finite(block, f"write_spots: spectra[{system!r}]")
            blocks[system] = block
        if durable:
            self._stage_block(iy, ix, blocks, shot, times, pos)
            self._maybe_commit()
            return
        self._commit()  # journalled single spots first, so the order of writes is kept
        keep = _last_of_each(iy * self.layout.nx + ix)
        iy, ix = iy[keep], ix[keep]
        self._shot[iy, ix] = shot[keep]
        self._time[iy, ix] = times[keep]
        self._pos[iy, ix] = pos[keep]
        new = int(np.count_nonzero(~self._written[iy, ix]))
        self._commit_spots(iy, ix, blocks, keep)
        # Counted once in the file: a failed commit leaves these spots unwritten (no journal here).
        self._n_written += new
        self._written[iy, ix] = True

    @_stops_on_write_failure("writing derived results")
    def write_derived(self, name: str, iy, ix, *, spectra=None, label=None, novelty=None) -> None:
        """Live results for spots (iy, ix) into the pre-created /entry/<name> group."""
        self._check_open()
        group = self._derived.get(name)
        if group is None:
            raise PairedMapError(f"{self.path}: no derived group /entry/{name}; create the map with "
                                 f"derived={{{name!r}: n_pixels}}")
        write_derived_values(group, iy, ix, self.layout.shape, spectra=spectra, label=label, novelty=novelty)

    @property
    def has_true_positions(self) -> bool:
        return "true_position" in self._h5["entry/sample"]

    @_stops_on_write_failure("writing true positions")
    def write_true_positions(self, iy, ix, position_um) -> None:
        """Simulated maps: where the shots of spots (iy, ix) really hit, (x, y) µm [k, 2], into
        /entry/sample/true_position (created with sample_truth={"true_position": None})."""
        self._check_open()
        dataset = self._h5["entry/sample"].get("true_position")
        if dataset is None:
            raise PairedMapError(f"{self.path}: no /entry/sample/true_position; create the map with "
                                 "sample_truth={'true_position': None}")
        iy = np.atleast_1d(np.asarray(iy, dtype=np.int64))
        ix = np.atleast_1d(np.asarray(ix, dtype=np.int64))
        positions = np.asarray(position_um, dtype=np.float64).reshape(-1, 2)
        if not len(iy):
            return
        rows = np.unique(iy)
        block = dataset[rows[0]:rows[-1] + 1]
        block[iy - rows[0], ix] = positions
        dataset[rows[0]:rows[-1] + 1] = block

    @_stops_on_write_failure("flushing the map")
    def flush(self) -> None:
        """Commit everything written so far, derived data included, to the HDF5 file (visible to
        live readers)."""
        self._check_open()
        self._commit()
        self._h5.flush()

    @_stops_on_write_failure("finishing the map")
    def finish(self) -> None:
        """Commit, write /entry/end_time (the map is complete) and close, with readers open or not."""
        self._check_open()
        self._commit()
        missing = self.layout.shape[0] * self.layout.shape[1] - self._n_written
        if missing:
            log.warning("%s: finished with %d spot(s) never acquired", self.path, missing)
        # Written by this SWMR writer, never through an exclusive reopen: a reader that holds the
        # file open (a live view, h5py with swmr=True) must not turn a finished map into an error.
        try:
            self._h5["entry"].create_dataset("end_time", data=now_iso(), dtype=h5py.string_dtype())
            self._h5.flush()
        except (ValueError, RuntimeError, OSError) as exc:
            # An HDF5 library that refuses new objects in SWMR mode: reopen (needs no reader).
            log.info("%s: end_time not writable in SWMR mode (%s); reopening to write it", self.path, exc)
            self._h5.close()
            with open_for_update(self.path, rdcc_nbytes=0) as f:
                f["entry"].create_dataset("end_time", data=now_iso(), dtype=h5py.string_dtype())
        if self._h5.id.valid:
            self._h5.close()
        self._reserve.release()
        self._journal.close(remove=True)

    def close(self) -> None:
        """Commit and close without finishing; the map can be resumed later."""
        if self._journal.closed:
            return
        if self._failure is not None:
            # Nothing more is written after a failure; the journal keeps what the file lacks. The
            # reserve gives HDF5 the room to flush what it holds and close the file cleanly.
            self._reserve.release()
            try:
                if self._h5.id.valid:
                    self._h5.close()
            except WRITE_FAILURES as exc:
                log.error("%s: could not be closed after the failed write: %s", self.path, _first_line(exc))
            self._journal.close(remove=False)
            return
        try:
            if self._h5.id.valid:
                self._commit()
        except BaseException:
            # The journal still holds the spots that did not reach the file: keep it for resume().
            self._reserve.release()
            if self._h5.id.valid:
                self._h5.close()
            self._journal.close(remove=False)
            raise
        self._h5.close()
        self._reserve.release()
        self._journal.close(remove=True)

    def __enter__(self) -> "PairedMapWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._journal.closed:
            raise PairedMapError(f"{self.path}: the writer is closed")
        if self._failure is not None:
            raise MapWriteError(f"{self.path}: writing stopped after a failure ({self._failure})",
                                in_file=self._n_in_file, in_journal=self._n_written - self._n_in_file)

    def _check_index(self, iy, ix) -> tuple[int, int]:
        ny, nx = self.layout.shape
        iy, ix = int(iy), int(ix)
        if not (0 <= iy < ny and 0 <= ix < nx):
            raise IndexError(f"spot ({iy}, {ix}) is outside the {ny}x{nx} map")
        return iy, ix

    def _check_spectra(self, spectra: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        if set(spectra) != set(self.systems):
            missing = [s for s in self.systems if s not in spectra]
            if missing:
                raise ValueError(f"{where}: no spectrum for system {missing[0]!r} (the map holds "
                                 f"{', '.join(self.systems)}); a pair is recorded whole or not at all")
            raise ValueError(f"{where}: the map has no system {sorted(set(spectra) - set(self.systems))[0]!r}")
        out = {}
        for system in self.systems:
            arr = np.asarray(spectra[system])
            if arr.shape != (self._n_pixels[system],):
                raise ValueError(f"{where}: spectra[{system!r}] has shape {arr.shape}, "
                                 f"expected ({self._n_pixels[system]},)")
            _check_finite(arr, f"{where}: spectra[{system!r}]")
            out[system] = arr
        return out

    def _stage(self, iy, ix, arrays, shot_id, timestamp, position, *, journal: bool) -> None:
        key = (iy, ix)
        if key not in self._pending and len(self._pending) >= self._batch_spots:
            self._commit()  # a replayed journal may hold more spots than this writer's batch
        slot = self._pending.get(key, len(self._pending))
        rows = [self._buffers[s][slot] for s in self.systems]
        for row, system in zip(rows, self.systems):
            row[...] = arrays[system]
        if journal:
            self._journal.append(iy, ix, shot_id, timestamp, position[0], position[1], rows)
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending[key] = slot
        if not self._written[iy, ix]:
            self._written[iy, ix] = True
            self._n_written += 1
        self._shot[iy, ix] = shot_id
        self._time[iy, ix] = timestamp
        self._pos[iy, ix] = position

    def _stage_block(self, iy, ix, blocks, shot, times, pos) -> None:
        """Journal a block of checked spots with one write, then stage them like single spots."""
        start = 0
        while start < len(iy):
            room = self._batch_spots - len(self._pending)
            if room <= 0:
                self._commit()
                continue
            stop = min(len(iy), start + room)
            part = slice(start, stop)
            self._journal.append_many(iy[part], ix[part], shot[part], times[part], pos[part],
                                      [np.ascontiguousarray(blocks[s][part]) for s in self.systems])
            for i in range(start, stop):
                self._stage(int(iy[i]), int(ix[i]), {s: blocks[s][i] for s in self.systems}, int(shot[i]),
                            float(times[i]), (float(pos[i, 0]), float(pos[i, 1])), journal=False)
            start = stop

    def _maybe_commit(self) -> None:
        if (len(self._pending) >= self._batch_spots
                or time.monotonic() - self._first_pending >= self._commit_interval_s):
            self._commit()

    def _commit(self) -> None:
        """Everything pending (journalled) into the HDF5 file; then the journal starts over."""
        if not self._pending:
            return
        keys = np.array(list(self._pending), dtype=np.int64)
        slots = np.fromiter(self._pending.values(), dtype=np.int64, count=len(keys))
        self._commit_spots(keys[:, 0], keys[:, 1], self._buffers, slots)
        self._pending.clear()
        self._journal.start_generation()

    def _commit_spots(self, iy, ix, sources: Mapping[str, np.ndarray], rows: np.ndarray) -> None:
        """Spot i is sources[system][rows[i]]; its scan values are already in the in-memory copies.

        Order on disk: spectra and scan values, flush, then `acquired`, flush.
        """
        order, runs = sorted_runs(iy, ix)
        iy, ix, rows = iy[order], ix[order], rows[order]
        for system in self.systems:
            write_runs(self._spectra[system], sources[system], rows, iy, ix, runs)
        row_ranges = contiguous_ranges(np.unique(iy))
        for r0, r1 in row_ranges:
            self._scan["shot_id"][r0:r1] = self._shot[r0:r1]
            self._scan["timestamp"][r0:r1] = self._time[r0:r1]
            self._scan["position"][r0:r1] = self._pos[r0:r1]
        self._h5.flush()
        self._acquired[iy, ix] = 1
        for r0, r1 in row_ranges:
            self._scan["acquired"][r0:r1] = self._acquired[r0:r1]
        self._h5.flush()
        self._n_in_file = int(np.count_nonzero(self._acquired))


def _position(position_um, where: str) -> tuple[float, float]:
    pos = np.asarray(position_um, dtype=np.float64)
    if pos.shape != (2,):
        raise ValueError(f"{where}: position_um must be (x, y), got shape {pos.shape}")
    return float(pos[0]), float(pos[1])


def _last_of_each(flat: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of each value, in their original order."""
    _, first_from_end = np.unique(flat[::-1], return_index=True)
    return np.sort(flat.size - 1 - first_from_end)


def _check_finite(arr: np.ndarray, where: str) -> None:
    # A sum is finite only if every element is (counts are far from float32 overflow).
    if not np.isfinite(np.add.reduce(arr, axis=None)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{where}: {bad} non-finite value(s); raw counts must be finite")


__all__ = ["PairedMapWriter", "journal_path"]
