"""Opening paired-map files with h5py: SWMR fallbacks, stale writer flags, attribute values.

A writer in SWMR mode sets "open for write" flags in the superblock and clears
them on close. A writer killed with SIGKILL leaves them set; HDF5 then refuses
every open except a SWMR read. Readers fall back to a SWMR read; resuming
clears the flags the way the `h5clear -s` tool does, through the
"clear_status_flags" file-access property (HDF5 has no dedicated API call, and
h5py exposes no generic property setter, so it is set with ctypes on the HDF5
library that h5py itself loaded).
"""

from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path

import h5py
import numpy as np

from .layout import PairedMapError, PairedMapFormatError

log = logging.getLogger(__name__)

_STALE_WRITER = "already open for write"


def is_stale_writer_error(exc: BaseException) -> bool:
    return _STALE_WRITER in str(exc)


def _libhdf5() -> ctypes.CDLL:
    from h5py import h5p

    # dlsym on an extension module's handle also searches the libraries it links, so
    # this finds the very libhdf5 h5py uses, whatever it is called on this system.
    lib = ctypes.CDLL(h5p.__file__)
    lib.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    lib.H5Pset.restype = ctypes.c_int
    return lib


def _fapl(*, clear_status_flags: bool = False, rdcc_nbytes: int | None = None) -> h5py.h5p.PropFAID:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    if rdcc_nbytes is not None:
        # w0 = 1: chunks written in full are evicted first; partly filled ones stay for the next batch.
        fapl.set_cache(0, 10007, rdcc_nbytes, 1.0)
    if clear_status_flags:
        flag = ctypes.c_bool(True)
        try:
            status = _libhdf5().H5Pset(fapl.id, b"clear_status_flags", ctypes.byref(flag))
        except (OSError, AttributeError) as exc:
            raise PairedMapError(
                "cannot clear the stale 'open for write' flags left by a killed writer "
                f"({exc}); run `h5clear -s FILE` and try again") from exc
        if status < 0:
            raise PairedMapError("HDF5 refused the clear_status_flags property; run `h5clear -s FILE`")
    return fapl


def open_for_update(path: Path, *, rdcc_nbytes: int) -> h5py.File:
    """Open read-write (no SWMR yet), clearing the flags of a writer that was killed."""
    name = str(path).encode()
    try:
        fid = h5py.h5f.open(name, h5py.h5f.ACC_RDWR, fapl=_fapl(rdcc_nbytes=rdcc_nbytes))
    except OSError as exc:
        if not is_stale_writer_error(exc):
            raise PairedMapError(f"{path}: cannot open for writing: {exc}") from exc
        log.warning("%s: was not closed by its writer (killed?); clearing its 'open for write' flags", path)
        fid = h5py.h5f.open(name, h5py.h5f.ACC_RDWR,
                            fapl=_fapl(clear_status_flags=True, rdcc_nbytes=rdcc_nbytes))
    return h5py.File(fid)


def open_for_reading(path: Path, *, live: bool) -> tuple[h5py.File, bool]:
    """(file, swmr) — a SWMR read when asked, or when a writer holds or held the file.

    The chunk cache is off: chunks then go straight from the file into the
    caller's array, which is what makes row-block reads run near raw speed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such paired-map file")
    if not h5py.is_hdf5(path):
        raise PairedMapFormatError(f"{path}: not an HDF5 file")
    kwargs = dict(libver="latest", rdcc_nbytes=0, locking=False)
    if live:
        return h5py.File(path, "r", swmr=True, **kwargs), True
    try:
        return h5py.File(path, "r", **kwargs), False
    except OSError as exc:
        if not is_stale_writer_error(exc):
            raise PairedMapFormatError(f"{path}: HDF5 cannot open it: {exc}") from exc
        log.warning("%s: held by a writer or left open by a killed one; reading it in SWMR mode. Other HDF5 "
                    "tools refuse such a file: if no writer runs, `libs-acquire recover %s` closes it "
                    "cleanly (no instrument is touched) and it stays resumable", path, path)
        return h5py.File(path, "r", swmr=True, **kwargs), True


# -- attribute values --------------------------------------------------------

def attr_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return attr_text(value[()])
    return str(value)


def to_attr(value):
    """A Python value as an HDF5 attribute: scalars and flat lists as they are, the rest as JSON."""
    if isinstance(value, (str, bool, int, float, np.generic)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf" and arr.ndim == 1:
            return arr
        if arr.dtype.kind == "U" and arr.ndim == 1:
            return [str(v) for v in arr]
    return json.dumps(value, default=str)


def from_attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            return [attr_text(v) for v in value]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_attrs(obj, attrs: dict) -> None:
    for key, value in attrs.items():
        obj.attrs[str(key)] = to_attr(value)


def read_attrs(obj) -> dict:
    return {key: from_attr(obj.attrs[key]) for key in obj.attrs}
