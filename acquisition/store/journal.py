"""The spot journal: a small file beside the map that makes every spot survive kill -9.

Each spot is appended as one record, written with a single os.pwritev so that it
reaches the kernel (and so outlives the writing process) before write_spot
returns. The HDF5 file itself is written in batches; after a batch is on disk
(spectra first, flush, then `acquired`, flush) the journal starts a new
generation and overwrites itself from offset 0, so it never holds more than one
batch. Replaying the journal is idempotent: every record carries the whole spot.

Record layout, little-endian, fixed size for a given file:

    header  "<4sIQQiiqddd": magic b"TPJ1", generation, file id, sequence number,
            iy, ix, shot_id, timestamp, x_um, y_um                     (64 bytes)
    payload the spectra of every system of the file, float32, in file order
    trailer crc32 of header + payload                                   (4 bytes)

A record is valid when its magic, file id and generation match, its sequence
number follows the previous one, and its checksum holds; the first record that
fails ends the replay (a torn tail, or an older generation).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .layout import PairedMapError

try:
    import fcntl
except ImportError:  # pragma: no cover - no advisory locks on this platform
    fcntl = None

log = logging.getLogger(__name__)

MAGIC = b"TPJ1"
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
HEADER = struct.Struct("<4sIQQiiqddd")
TRAILER = struct.Struct("<I")


def journal_path(map_path: Path | str) -> Path:
    return Path(str(map_path) + ".journal")


def writer_active(map_path: Path | str) -> bool:
    """Whether a live writer holds the map (its journal is locked)."""
    path = journal_path(map_path)
    if fcntl is None or not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class SpaceReserve:
    """A file of preallocated bytes beside the map, given back to the disk when writing fails, so
    that HDF5 can still flush and close the map cleanly on a full disk."""

    def __init__(self, map_path: Path | str, nbytes: int):
        self.path = Path(str(map_path) + ".reserve")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, int(nbytes))
                else:  # pragma: no cover
                    os.pwrite(fd, bytes(int(nbytes)), 0)
            finally:
                os.close(fd)
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            log.warning("%s: no room for a %.1f MB reserve (%s): a full disk may leave the map unclosed",
                        self.path, nbytes / 1e6, exc)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    @staticmethod
    def remove(map_path: Path | str) -> None:
        Path(str(map_path) + ".reserve").unlink(missing_ok=True)


@dataclass(frozen=True)
class JournalRecord:
    iy: int
    ix: int
    shot_id: int
    timestamp: float
    position_um: tuple[float, float]
    spectra: tuple[np.ndarray, ...]


class SpotJournal:
    """Owns the journal file of one map while a writer has it open (exclusive lock)."""

    def __init__(self, map_path: Path):
        """Open (creating it) and lock the journal; configure() before use."""
        self.path = journal_path(map_path)
        self.file_id = 0
        self.n_pixels: tuple[int, ...] = ()
        self.record_size = 0
        self._fd = self._open_locked(map_path)
        self._generation = 1
        self._sequence = 0
        self._offset = 0

    def _open_locked(self, map_path: Path) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise PairedMapError(
                    f"{map_path}: another process is writing this map (its journal {self.path.name} "
                    "is locked); stop that writer first") from None
            # The previous writer may have removed the journal between our open and our lock:
            # then we hold a lock on a file nobody will find again, so start over.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def configure(self, file_id: int, n_pixels: Sequence[int]) -> None:
        self.file_id = int(file_id)
        self.n_pixels = tuple(int(n) for n in n_pixels)
        self.record_size = HEADER.size + 4 * sum(self.n_pixels) + TRAILER.size

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def append(self, iy: int, ix: int, shot_id: int, timestamp: float, x_um: float, y_um: float,
               spectra: Sequence[np.ndarray]) -> None:
        """Write one spot; the spectra must be C-contiguous float32 of the file's pixel counts."""
        header = HEADER.pack(MAGIC, self._generation, self.file_id, self._sequence, iy, ix,
                             shot_id, timestamp, x_um, y_um)
        crc = zlib.crc32(header)
        for spectrum in spectra:
            crc = zlib.crc32(spectrum, crc)
        buffers = [header, *spectra, TRAILER.pack(crc)]
        with self._whole_or_nothing():
            written = os.pwritev(self._fd, buffers, self._offset)
            if written != self.record_size:
                # A short write of a regular file means the disk is full or failing: try the rest.
                rest = b"".join(bytes(b) for b in buffers)[written:]
                os.pwrite(self._fd, rest, self._offset + written)
        self._offset += self.record_size
        self._sequence += 1

    def append_many(self, iy, ix, shot_id, timestamp, position_um, spectra) -> None:
        """Write k spots as k records with one os.pwritev; spectra: per system, float32 [k, n]."""
        buffers = []
        for i in range(len(iy)):
            header = HEADER.pack(MAGIC, self._generation, self.file_id, self._sequence + i, int(iy[i]),
                                 int(ix[i]), int(shot_id[i]), float(timestamp[i]), float(position_um[i][0]),
                                 float(position_um[i][1]))
            crc = zlib.crc32(header)
            rows = [block[i] for block in spectra]
            for row in rows:
                crc = zlib.crc32(row, crc)
            buffers += [header, *rows, TRAILER.pack(crc)]
        size = self.record_size * len(iy)
        written = 0
        # pwritev takes at most IOV_MAX buffers at a time.
        step = max(1, (_IOV_MAX // (len(spectra) + 2))) * (len(spectra) + 2)
        with self._whole_or_nothing():
            for start in range(0, len(buffers), step):
                part = buffers[start:start + step]
                n = os.pwritev(self._fd, part, self._offset + written)
                expected = sum(memoryview(b).nbytes for b in part)
                if n != expected:
                    rest = b"".join(bytes(b) for b in part)[n:]
                    os.pwrite(self._fd, rest, self._offset + written + n)
                written += expected
        self._offset += size
        self._sequence += len(iy)

    @contextlib.contextmanager
    def _whole_or_nothing(self):
        """A failed write (disk full) takes back what it wrote of its records, so the journal holds
        exactly the spots whose write returned: what the writer counts is what a replay finds."""
        try:
            yield
        except OSError:
            try:
                os.ftruncate(self._fd, self._offset)
            except OSError as exc:
                log.warning("%s: could not cut off a partly written record: %s", self.path, exc)
            raise

    def start_generation(self) -> None:
        """Everything journalled so far is in the HDF5 file: reuse the journal from the start."""
        self._generation += 1
        self._sequence = 0
        self._offset = 0

    def records(self) -> Iterator[JournalRecord]:
        """The valid records of the newest generation, in the order they were written."""
        size = os.fstat(self._fd).st_size
        offset, generation, expected_seq = 0, None, 0
        while offset + self.record_size <= size:
            raw = os.pread(self._fd, self.record_size, offset)
            if len(raw) < self.record_size:
                break
            magic, gen, file_id, seq, iy, ix, shot, t, x, y = HEADER.unpack_from(raw)
            (crc,) = TRAILER.unpack_from(raw, self.record_size - TRAILER.size)
            if magic != MAGIC or zlib.crc32(memoryview(raw)[:-TRAILER.size]) != crc:
                break
            if file_id != self.file_id:
                log.warning("%s: holds records of another file (id %x, expected %x); ignoring them",
                            self.path, file_id, self.file_id)
                break
            if generation is None:
                generation = gen
            if gen != generation or seq != expected_seq:
                break
            payload = np.frombuffer(raw, dtype="<f4", offset=HEADER.size,
                                    count=sum(self.n_pixels))
            spectra = tuple(np.array(part) for part in
                            np.split(payload, np.cumsum(self.n_pixels)[:-1]))
            yield JournalRecord(iy, ix, shot, t, (x, y), spectra)
            offset += self.record_size
            expected_seq += 1

    def is_empty(self) -> bool:
        return os.fstat(self._fd).st_size == 0

    def reset(self) -> None:
        """Empty the journal (after a replay has been committed)."""
        os.ftruncate(self._fd, 0)
        self._generation = 1
        self._sequence = 0
        self._offset = 0

    def close(self, *, remove: bool) -> None:
        if self._fd < 0:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1
