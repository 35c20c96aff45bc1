"""Creating the groups and datasets of a paired map (everything before SWMR starts).

Chunk shapes: spectra are chunked one row by `spectra_chunk_columns` spots by
all pixels, about 256 KiB, so a spot lands in a single chunk, a batch of
consecutive spots fills whole chunks (written as they are, no read-back), and a
row block is read chunk by chunk straight into the caller's array. The small
per-spot datasets of /entry/scan are chunked by map row.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import h5py
import numpy as np

from .h5files import write_attrs
from acquisition.shared.spectral import check_wavelength_axis
from acquisition.shared.systems import SYSTEM_NAMES

from .layout import FORMAT, FORMAT_VERSION, MapLayout

SPECTRA_CHUNK_BYTES = 256 * 1024
STR = h5py.string_dtype()


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def spectra_chunk_columns(nx: int, n_pixels: int) -> int:
    return int(min(nx, max(1, round(SPECTRA_CHUNK_BYTES / (4 * n_pixels)))))


def checked_wavelengths(wavelengths: dict) -> dict[str, np.ndarray]:
    if not wavelengths:
        raise ValueError("wavelengths: give the axis of at least one system ('primary', 'secondary')")
    unknown = [s for s in wavelengths if s not in SYSTEM_NAMES]
    if unknown:
        raise ValueError(f"wavelengths: unknown system {unknown[0]!r} (systems are {SYSTEM_NAMES})")
    out = {}
    for system in SYSTEM_NAMES:
        if system not in wavelengths:
            continue
        out[system] = check_wavelength_axis(wavelengths[system], name=f"wavelengths[{system!r}]")
    return out


def _dataset(group, name, data=None, *, shape=None, dtype=None, chunks=None, fill=None, units=None, **attrs):
    kwargs = {}
    if chunks is not None:
        kwargs["chunks"] = chunks
    if fill is not None:
        kwargs["fillvalue"] = fill
    ds = group.create_dataset(name, data=data, shape=shape, dtype=dtype, **kwargs)
    if units is not None:
        ds.attrs["units"] = units
    write_attrs(ds, attrs)
    return ds


def _nxdata(group, signal_axes=("y", "x", "wavelength")) -> None:
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = "spectra"
    group.attrs["axes"] = list(signal_axes)
    for i, axis in enumerate(signal_axes):
        group.attrs[f"{axis}_indices"] = i


def _spectra_dataset(group, layout: MapLayout, n: int):
    cx = spectra_chunk_columns(layout.nx, n)
    return _dataset(group, "spectra", shape=layout.shape + (n,), dtype=np.float32,
                    chunks=(1, cx, n), fill=np.float32(np.nan), units="counts")


def create_skeleton(f: h5py.File, layout: MapLayout, wavelengths: dict[str, np.ndarray], *, title: str,
                    sample_name: str, creator: str, instrument: dict | None, sample_truth: dict | None,
                    derived: dict | None) -> int:
    """Lay out a new, empty map in `f`; return the journal id written to /entry/scan."""
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = np.int64(FORMAT_VERSION)
    f.attrs["creator"] = creator
    f.attrs["NX_class"] = "NXroot"
    f.attrs["default"] = "entry"
    systems = tuple(wavelengths)
    entry = f.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = systems[0]
    _dataset(entry, "title", str(title), dtype=STR)
    _dataset(entry, "start_time", now_iso(), dtype=STR)

    sample = entry.create_group("sample")
    sample.attrs["NX_class"] = "NXsample"
    _dataset(sample, "name", str(sample_name), dtype=STR)
    if sample_truth is not None:
        write_sample_truth(sample, layout, sample_truth)

    inst = entry.create_group("instrument")
    inst.attrs["NX_class"] = "NXinstrument"
    settings = dict(instrument or {})
    for name in list(systems) + [k for k in settings if k not in systems]:
        group = inst.create_group(str(name))
        group.attrs["NX_class"] = ("NXdetector" if name in SYSTEM_NAMES
                                   else "NXsource" if name == "laser" else "NXcollection")
        values = settings.get(name, {})
        if not isinstance(values, dict):
            raise ValueError(f"instrument[{name!r}]: must be a dict of settings, got {type(values).__name__}")
        write_attrs(group, values)

    for system, axis in wavelengths.items():
        group = entry.create_group(system)
        _nxdata(group)
        _spectra_dataset(group, layout, axis.size)
        _dataset(group, "wavelength", axis, units="nm", long_name="wavelength (air)")
        _dataset(group, "x", layout.x_um, units="um")
        _dataset(group, "y", layout.y_um, units="um")

    scan = entry.create_group("scan")
    scan.attrs["NX_class"] = "NXcollection"
    scan.attrs["order"] = layout.order
    scan.attrs["step_um"] = np.asarray([layout.dy_um, layout.dx_um], dtype=np.float64)   # [dy, dx] in the file
    scan.attrs["origin_um"] = np.asarray(layout.origin_um, dtype=np.float64)
    journal_id = secrets.randbits(63)
    scan.attrs["journal_id"] = np.int64(journal_id)
    row = (1, layout.nx)
    _dataset(scan, "acquired", shape=layout.shape, dtype=np.uint8, chunks=row, fill=np.uint8(0), units="1")
    _dataset(scan, "shot_id", shape=layout.shape, dtype=np.int64, chunks=row, fill=np.int64(-1), units="1")
    _dataset(scan, "timestamp", shape=layout.shape, dtype=np.float64, chunks=row, fill=np.nan, units="s")
    _dataset(scan, "position", shape=layout.shape + (2,), dtype=np.float64, chunks=row + (2,),
             fill=np.nan, units="um")

    for name, spec in (derived or {}).items():
        create_derived_group(f, name, layout, spec)
    return journal_id


def write_sample_truth(sample: h5py.Group, layout: MapLayout, truth: dict) -> None:
    """Ground truth of a simulated map: `phase_map` (+ `phase_names`), `true_position`, attributes.

    `true_position` (x, y µm of every spot's shot, NaN where none hit) may be None: the
    dataset is then created all NaN, to be filled while the map is acquired.
    """
    unknown = set(truth) - {"phase_map", "phase_names", "true_position", "attrs"}
    if unknown:
        raise ValueError(f"sample_truth: unknown key {sorted(unknown)[0]!r}")
    if "phase_map" in truth:
        phase_map = np.asarray(truth["phase_map"])
        if phase_map.shape != layout.shape:
            raise ValueError(f"sample_truth['phase_map']: shape {phase_map.shape} differs from the map "
                             f"{layout.shape}")
        _dataset(sample, "phase_map", phase_map.astype(np.int16), units="1")
        names = [str(n) for n in truth.get("phase_names", [])]
        _dataset(sample, "phase_names", np.array(names, dtype=object), dtype=STR)
    if "true_position" in truth:
        shape = layout.shape + (2,)
        values = truth["true_position"]
        if values is not None and np.shape(values) != shape:
            raise ValueError(f"sample_truth['true_position']: shape {np.shape(values)}, expected {shape}")
        _dataset(sample, "true_position", None if values is None else np.asarray(values, np.float64),
                 shape=None if values is not None else shape, dtype=np.float64,
                 chunks=(1, layout.nx, 2), fill=np.nan, units="um")
    write_attrs(sample, truth.get("attrs", {}))


def create_derived_group(f: h5py.File, name: str, layout: MapLayout, spec) -> h5py.Group:
    """/entry/<name>: NXdata of derived spectra [ny, nx, n], label int16 (-1 = none), novelty.

    `spec` is the wavelength axis of the derived spectra, or just their pixel
    count when that equals the primary system's (whose axis is then linked).
    """
    if name in SYSTEM_NAMES or name in ("scan", "sample", "instrument"):
        raise ValueError(f"derived group name {name!r} is reserved")
    entry = f["entry"]
    if np.ndim(spec) == 0:
        n = int(spec)
        primary = entry.get("primary/wavelength")
        if primary is None or primary.shape[0] != n:
            raise ValueError(f"derived[{name!r}]: {n} pixels, but no primary axis of that length to use; "
                             "give the wavelength axis instead of a pixel count")
        axis = None
    else:
        axis = checked_wavelengths({"primary": spec})["primary"]
        n = axis.size
    group = entry.create_group(name)
    _nxdata(group)
    group.attrs["model_id"] = ""
    _spectra_dataset(group, layout, n)
    row = (1, layout.nx)
    _dataset(group, "label", shape=layout.shape, dtype=np.int16, chunks=row, fill=np.int16(-1), units="1")
    _dataset(group, "novelty", shape=layout.shape, dtype=np.float32, chunks=row, fill=np.float32(np.nan),
             units="1")
    if axis is None:
        group["wavelength"] = entry["primary/wavelength"]
    else:
        _dataset(group, "wavelength", axis, units="nm")
    first = next(s for s in SYSTEM_NAMES if s in entry)
    group["x"] = entry[f"{first}/x"]
    group["y"] = entry[f"{first}/y"]
    return group
